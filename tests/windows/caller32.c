/*
 * caller32.exe: a stand-in for the 32-bit SMS 2003 / SCCM 2007 client in the Windows lane.
 *
 * Built for i686 (32-bit) with mingw-w64 by scripts/test-windows-bundle, it starts its own
 * command-line tail as the SMS client starts a program line: CreateProcessW with no application
 * name and the line as one string, so Windows finds the program itself (a 32-bit search: %windir%
 * as is, System32 redirected to SysWOW64). It hands the child its standard handles, waits, and
 * exits with the child's exit code, whole. Exit 7801 and one line on stderr if it cannot start.
 */
#define WIN32_LEAN_AND_MEAN
#ifndef UNICODE
#define UNICODE
#endif
#include <windows.h>

/* The command line after word 0, as Windows parses word 0 (see windows/launcher.c). */
static wchar_t *command_tail(wchar_t *line) {
    wchar_t *p = line;
    if (*p == L'"') {
        p++;
        while (*p && *p != L'"')
            p++;
        if (*p == L'"')
            p++;
    } else {
        while (*p && *p != L' ' && *p != L'\t')
            p++;
    }
    while (*p == L' ' || *p == L'\t')
        p++;
    return p;
}

int wmain(void) {
    wchar_t *tail = command_tail(GetCommandLineW());
    STARTUPINFOW startup;
    ZeroMemory(&startup, sizeof startup);
    startup.cb = sizeof startup;
    startup.dwFlags = STARTF_USESTDHANDLES;
    startup.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    startup.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
    startup.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    HANDLE standard[3] = {startup.hStdInput, startup.hStdOutput, startup.hStdError};
    for (int i = 0; i < 3; i++)
        if (standard[i] != NULL && standard[i] != INVALID_HANDLE_VALUE)
            SetHandleInformation(standard[i], HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT);
    PROCESS_INFORMATION child;
    if (!CreateProcessW(NULL, tail, NULL, NULL, TRUE, 0, NULL, NULL, &startup, &child)) {
        DWORD done;
        const char line[] = "caller32: CreateProcessW failed\r\n";
        WriteFile(startup.hStdError, line, sizeof line - 1, &done, NULL);
        ExitProcess(7801);
    }
    CloseHandle(child.hThread);
    DWORD code = 7801;
    WaitForSingleObject(child.hProcess, INFINITE);
    GetExitCodeProcess(child.hProcess, &code);
    ExitProcess(code);
}
