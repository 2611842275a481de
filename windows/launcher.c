/*
 * p2pdist-wrapper.exe and p2pdist.exe: start the bundled Windows CPython on one p2pdist module
 * and hand it this process's command line tail untouched.
 *
 * Built with mingw-w64 (scripts/windows-bundle) twice from this file:
 *   -DLAUNCH_MODULE=L"p2pdist.wrapper" -DLAUNCH_FAIL=7704 -DLAUNCH_VIEW=1   p2pdist-wrapper.exe
 *   -DLAUNCH_MODULE=L"p2pdist"         -DLAUNCH_FAIL=1                       p2pdist.exe
 *
 * Why a C program and not a Python console-script launcher: SMS judges a program only by its
 * exit code and starts it with one command-line string. This launcher keeps both exact: it never
 * re-splits or re-quotes the tail (msiexec reads TRANSFORMS="a b.mst" with its quotes), and it
 * returns the child's 32-bit exit code as is (2147944003 stays 2147944003). It adds a few
 * milliseconds before python.exe starts and no DLLs of its own.
 */
#define WIN32_LEAN_AND_MEAN
#ifndef UNICODE
#define UNICODE
#endif
#ifndef _UNICODE
#define _UNICODE
#endif
#include <windows.h>

#ifndef LAUNCH_MODULE
#error "define LAUNCH_MODULE, e.g. -DLAUNCH_MODULE=L\"p2pdist.wrapper\""
#endif
#ifndef LAUNCH_FAIL
#define LAUNCH_FAIL 1
#endif
#ifndef LAUNCH_VIEW
#define LAUNCH_VIEW 0
#endif

#define PYTHON_REL L"\\python\\python.exe"
/* Where install.cmd records the installation, for a copy of this launcher placed elsewhere
 * (%windir%\p2pdist-wrapper.exe: SMS finds a program in %windir% without any PATH change). */
#define INSTALL_KEY L"SOFTWARE\\p2pdist"
#define INSTALL_VALUE L"InstallDir"
#define MAX_LONG_PATH 32768

static void say(const wchar_t *text) {
    /* One line on stderr; WriteConsoleW on a console (any language), UTF-8 bytes on a pipe or file. */
    HANDLE err = GetStdHandle(STD_ERROR_HANDLE);
    DWORD mode, done;
    if (err == NULL || err == INVALID_HANDLE_VALUE)
        return;
    if (GetConsoleMode(err, &mode)) {
        WriteConsoleW(err, text, (DWORD)lstrlenW(text), &done, NULL);
        return;
    }
    char buffer[2048];
    int n = WideCharToMultiByte(CP_UTF8, 0, text, -1, buffer, sizeof buffer, NULL, NULL);
    if (n > 1)
        WriteFile(err, buffer, (DWORD)(n - 1), &done, NULL);
}

static void fail(const wchar_t *what, DWORD error) {
    wchar_t line[1024];
    wchar_t reason[400] = L"";
    if (error)
        FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, error, 0, reason, 400, NULL);
    for (int i = lstrlenW(reason) - 1; i >= 0 && (reason[i] == L'\r' || reason[i] == L'\n' || reason[i] == L' '); i--)
        reason[i] = 0;
    wsprintfW(line, L"%s: %s (error %lu: %s)\r\n", LAUNCH_MODULE, what, error, reason);
    say(line);
    ExitProcess(LAUNCH_FAIL);
}

/* The command line after word 0, exactly as Windows parses word 0 (CommandLineToArgvW and the
 * C runtime agree): a leading quote runs to the next quote, else up to the first space or tab;
 * backslashes mean nothing there. The blanks after it are skipped; nothing else is touched. */
static const wchar_t *command_tail(const wchar_t *line) {
    const wchar_t *p = line;
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

static int file_exists(const wchar_t *path) {
    DWORD attributes = GetFileAttributesW(path);
    return attributes != INVALID_FILE_ATTRIBUTES && !(attributes & FILE_ATTRIBUTE_DIRECTORY);
}

/* python.exe beside this executable (the bundle, %ProgramFiles%\p2pdist), else under the folder
 * the registry names (a copy of this launcher in %windir%). The 64-bit registry view is read
 * whatever the caller: the installation is 64-bit. */
static void find_python(wchar_t *python, DWORD size) {
    DWORD n = GetModuleFileNameW(NULL, python, size);
    if (n == 0 || n >= size)
        fail(L"cannot read this program's own path", GetLastError());
    wchar_t *slash = python + n;
    while (slash > python && *slash != L'\\')
        slash--;
    *slash = 0;
    if ((DWORD)lstrlenW(python) + lstrlenW(PYTHON_REL) < size) {
        lstrcatW(python, PYTHON_REL);
        if (file_exists(python))
            return;
    }
    DWORD bytes = (size - lstrlenW(PYTHON_REL) - 1) * sizeof(wchar_t);
    LSTATUS status = RegGetValueW(HKEY_LOCAL_MACHINE, INSTALL_KEY, INSTALL_VALUE,
                                  RRF_RT_REG_SZ | RRF_SUBKEY_WOW6464KEY, NULL, python, &bytes);
    if (status != ERROR_SUCCESS)
        fail(L"no python\\python.exe beside this program and no HKLM\\" INSTALL_KEY L" " INSTALL_VALUE L" (install p2pdist with install.cmd)", (DWORD)status);
    n = (DWORD)lstrlenW(python);
    while (n > 0 && python[n - 1] == L'\\')
        python[--n] = 0;
    lstrcatW(python, PYTHON_REL);
    if (!file_exists(python))
        fail(L"the installation the registry names has no python\\python.exe", ERROR_FILE_NOT_FOUND);
}

#if LAUNCH_VIEW
typedef LONG(NTAPI *query_process_t)(HANDLE, ULONG, PVOID, ULONG, PULONG);
typedef BOOL(WINAPI *is_wow64_2_t)(HANDLE, USHORT *, USHORT *);

/* Whether the process that started us runs under WOW64 (the SMS 2003 / SCCM 2007 client is
 * 32-bit). A command SMS starts then sees the 32-bit view (System32 is SysWOW64, Program Files
 * (x86), Wow6432Node); this 64-bit launcher and python would silently give it the 64-bit view,
 * so the wrapper is told to start it as a 32-bit caller would (p2pdist/wrapper/bitness.py).
 * The parent is taken from our own process information; it counts only if it was created
 * before us (otherwise its id was reused) and can be opened. Anything unknown: native view. */
static int caller_is_32bit(void) {
    struct {
        PVOID reserved1;
        PVOID peb;
        ULONG_PTR reserved2[2];
        ULONG_PTR pid;
        ULONG_PTR parent;
    } info;
    query_process_t query = (query_process_t)(void *)GetProcAddress(GetModuleHandleW(L"ntdll.dll"), "NtQueryInformationProcess");
    if (query == NULL || query(GetCurrentProcess(), 0 /* ProcessBasicInformation */, &info, sizeof info, NULL) != 0)
        return 0;
    HANDLE parent = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)info.parent);
    if (parent == NULL)
        return 0;
    FILETIME parent_created, own_created, unused1, unused2, unused3;
    int result = 0;
    if (GetProcessTimes(parent, &parent_created, &unused1, &unused2, &unused3) &&
        GetProcessTimes(GetCurrentProcess(), &own_created, &unused1, &unused2, &unused3) &&
        CompareFileTime(&parent_created, &own_created) <= 0) {
        is_wow64_2_t is_wow64_2 = (is_wow64_2_t)(void *)GetProcAddress(GetModuleHandleW(L"kernel32.dll"), "IsWow64Process2");
        USHORT process_machine = 0, native_machine = 0;
        BOOL wow64 = FALSE;
        if (is_wow64_2 != NULL && is_wow64_2(parent, &process_machine, &native_machine))
            result = process_machine == IMAGE_FILE_MACHINE_I386;
        else if (IsWow64Process(parent, &wow64))
            result = wow64 != FALSE;
    }
    CloseHandle(parent);
    return result;
}
#endif

/* Ctrl-C and Ctrl-Break reach every process on the console, python and the command included;
 * they decide what to do. The launcher only stays to collect the exit code. Close, logoff and
 * shutdown keep the default (the system ends us along with the others). A handler routine,
 * unlike SetConsoleCtrlHandler(NULL, TRUE), is not inherited: the child keeps its own Ctrl-C. */
static BOOL WINAPI on_console_event(DWORD event) {
    return event == CTRL_C_EVENT || event == CTRL_BREAK_EVENT;
}

int wmain(void) {
    static wchar_t python[MAX_LONG_PATH];
    find_python(python, MAX_LONG_PATH);

    /* "python.exe" -I [-X p2pdist-view=32] -m MODULE <tail>: -I so that neither the working
     * directory (a DP share, a package) nor PYTHON* variables can put code on sys.path of a
     * process running as SYSTEM. The wrapper finds where its own words start by comparing
     * sys.orig_argv with sys.argv (p2pdist/wrapper/winargs.py), so the words added here are
     * accounted for without telling it. */
    const wchar_t *tail = command_tail(GetCommandLineW());
    const wchar_t *view = L"";
#if LAUNCH_VIEW
    if (caller_is_32bit())
        view = L" -X p2pdist-view=32";
#endif
    size_t length = (size_t)lstrlenW(python) + lstrlenW(view) + lstrlenW(LAUNCH_MODULE) + lstrlenW(tail) + 32;
    if (length > MAX_LONG_PATH)  /* CreateProcess takes at most 32767 characters */
        fail(L"command line too long", ERROR_FILENAME_EXCED_RANGE);
    wchar_t *line = HeapAlloc(GetProcessHeap(), 0, length * sizeof(wchar_t));
    if (line == NULL)
        fail(L"out of memory", ERROR_NOT_ENOUGH_MEMORY);
    /* lstrcat, not wsprintf: wsprintf stops at 1024 characters. */
    lstrcpyW(line, L"\"");
    lstrcatW(line, python);
    lstrcatW(line, L"\" -I");
    lstrcatW(line, view);
    lstrcatW(line, L" -m " LAUNCH_MODULE);
    if (*tail) {
        lstrcatW(line, L" ");
        lstrcatW(line, tail);
    }

    SetConsoleCtrlHandler(on_console_event, TRUE);

    /* The child gets our standard handles explicitly (a pipe or file from SMS or a test stays its
     * stdout), our environment and our working directory (the wrapper reads the package from it). */
    STARTUPINFOW startup;
    ZeroMemory(&startup, sizeof startup);
    startup.cb = sizeof startup;
    startup.dwFlags = STARTF_USESTDHANDLES;
    startup.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    startup.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
    startup.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    HANDLE standard[3] = {startup.hStdInput, startup.hStdOutput, startup.hStdError};
    for (int i = 0; i < 3; i++)  /* a handle the child is given must be inheritable */
        if (standard[i] != NULL && standard[i] != INVALID_HANDLE_VALUE)
            SetHandleInformation(standard[i], HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT);
    PROCESS_INFORMATION child;
    if (!CreateProcessW(python, line, NULL, NULL, TRUE, 0, NULL, NULL, &startup, &child))
        fail(L"cannot start the bundled python", GetLastError());
    CloseHandle(child.hThread);

    /* Wait for it and hand its exit code on whole: SMS reads all 32 bits. */
    DWORD code = LAUNCH_FAIL;
    if (WaitForSingleObject(child.hProcess, INFINITE) != WAIT_OBJECT_0 || !GetExitCodeProcess(child.hProcess, &code))
        fail(L"lost track of the bundled python", GetLastError());
    CloseHandle(child.hProcess);
    ExitProcess(code);
}
