/*
 * p2pdist-service.exe: hosts the p2pdist agent as the Windows service "p2pdist".
 *
 * The Service Control Manager starts this program (LocalSystem, automatic start; install.cmd
 * registers it). It starts the bundled python on `-m p2pdist.agent --config <agent.toml>` and
 * stays as the service's face to the SCM:
 *   - a stop or shutdown sets the agent's stop event, "p2pdist-agent-stop-<pid>" (see
 *     p2pdist/agent/winstop.py); the agent then stops as on Ctrl-Break (closes the control
 *     API, announces "stopped" to the tracker, saves resume data and counters) and exits 0;
 *     meanwhile this host reports STOP_PENDING with a growing checkpoint;
 *   - an agent that ends without being asked ends this host without a report, which the SCM
 *     counts as a failure on every version, so its failure actions (restart) apply;
 *   - the agent lives in a job that ends with this host, so a host that dies cannot leave an
 *     agent behind to collide with the next one on the state folder's lock.
 * Why a C host instead of pywin32's pythonservice.exe: pywin32 needs its DLLs registered into
 * the interpreter (a post-install step the embeddable CPython does not run), pulls in a 10 MB
 * dependency for four API calls, and would run the agent's event loop inside the SCM's thread
 * model; here the agent is the same process as `python -m p2pdist.agent` on a console, stopped
 * the same way, and the host is a page of code with no dependencies.
 *
 * The agent's stderr goes to <data folder>\logs\service.log (the previous run's to
 * service.log.1), so a start-up error is on disk even before the agent's own log is open.
 */
#define WIN32_LEAN_AND_MEAN
#ifndef UNICODE
#define UNICODE
#endif
#ifndef _UNICODE
#define _UNICODE
#endif
#include <windows.h>
#include <shlobj.h>

#define SERVICE_NAME L"p2pdist"
#define STOP_DEADLINE_MS 60000  /* then the agent is ended the hard way */
#define CHECKPOINT_MS 2000
#define MAX_LONG_PATH 32768

static SERVICE_STATUS_HANDLE status_handle;
static SERVICE_STATUS status;
static HANDLE wake;           /* set by the control handler: the main loop acts at once */
static volatile LONG stopping;

static void report(DWORD state, DWORD win32_exit, DWORD specific_exit, DWORD wait_hint) {
    status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
    status.dwCurrentState = state;
    status.dwControlsAccepted = state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN : 0;
    status.dwWin32ExitCode = win32_exit;
    status.dwServiceSpecificExitCode = specific_exit;
    status.dwWaitHint = wait_hint;
    status.dwCheckPoint = (state == SERVICE_RUNNING || state == SERVICE_STOPPED) ? 0 : status.dwCheckPoint + 1;
    SetServiceStatus(status_handle, &status);
}

static DWORD WINAPI on_control(DWORD control, DWORD type, LPVOID data, LPVOID context) {
    (void)type, (void)data, (void)context;
    switch (control) {
    case SERVICE_CONTROL_STOP:
    case SERVICE_CONTROL_SHUTDOWN:
        InterlockedExchange(&stopping, 1);
        report(SERVICE_STOP_PENDING, NO_ERROR, 0, CHECKPOINT_MS * 2);
        SetEvent(wake);
        return NO_ERROR;
    case SERVICE_CONTROL_INTERROGATE:
        return NO_ERROR;
    default:
        return ERROR_CALL_NOT_IMPLEMENTED;
    }
}

/* The folder this program is in, without the trailing backslash. */
static BOOL own_folder(wchar_t *path, DWORD size) {
    DWORD n = GetModuleFileNameW(NULL, path, size);
    if (n == 0 || n >= size)
        return FALSE;
    while (n > 0 && path[n - 1] != L'\\')
        n--;
    path[n > 0 ? n - 1 : 0] = 0;
    return TRUE;
}

/* The data folder install.cmd chose (HKLM\SOFTWARE\p2pdist DataDir, the agent's default
 * state folder), else the machine's common application data folder + p2pdist. Not the
 * ProgramData variable: a service's environment need not have it (Wine's has another). */
static void data_folder(wchar_t *path, DWORD size) {
    DWORD bytes = size * sizeof(wchar_t);
    if (RegGetValueW(HKEY_LOCAL_MACHINE, L"SOFTWARE\\p2pdist", L"DataDir", RRF_RT_REG_SZ | RRF_SUBKEY_WOW6464KEY,
                     NULL, path, &bytes) == ERROR_SUCCESS && path[0])
        return;
    if (SHGetFolderPathW(NULL, CSIDL_COMMON_APPDATA, NULL, 0, path) != S_OK)
        lstrcpyW(path, L"C:\\ProgramData");
    lstrcatW(path, L"\\p2pdist");
}

/* service.log for this run, the previous one kept as service.log.1; NUL when it cannot be made. */
static HANDLE open_log(const wchar_t *data) {
    static wchar_t folder[MAX_PATH + 64], log[MAX_PATH + 80], old[MAX_PATH + 80];
    lstrcpyW(folder, data);
    CreateDirectoryW(folder, NULL);
    lstrcatW(folder, L"\\logs");
    CreateDirectoryW(folder, NULL);
    lstrcpyW(log, folder);
    lstrcatW(log, L"\\service.log");
    lstrcpyW(old, log);
    lstrcatW(old, L".1");
    MoveFileExW(log, old, MOVEFILE_REPLACE_EXISTING);
    SECURITY_ATTRIBUTES inherit = {sizeof inherit, NULL, TRUE};
    HANDLE handle = CreateFileW(log, GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                                &inherit, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    if (handle == INVALID_HANDLE_VALUE)
        handle = CreateFileW(L"NUL", GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, &inherit, OPEN_EXISTING, 0, NULL);
    return handle;
}

static void WINAPI service_main(DWORD argc, LPWSTR *argv) {
    (void)argc, (void)argv;
    status_handle = RegisterServiceCtrlHandlerExW(SERVICE_NAME, on_control, NULL);
    if (status_handle == NULL)
        return;
    report(SERVICE_START_PENDING, NO_ERROR, 0, 10000);

    static wchar_t folder[MAX_LONG_PATH], data[MAX_PATH + 64], line[MAX_LONG_PATH];
    wake = CreateEventW(NULL, FALSE, FALSE, NULL);
    if (wake == NULL || !own_folder(folder, MAX_LONG_PATH - 128)) {
        report(SERVICE_STOPPED, GetLastError(), 0, 0);
        return;
    }
    data_folder(data, MAX_PATH);
    wchar_t python[MAX_LONG_PATH];
    lstrcpyW(python, folder);
    lstrcatW(python, L"\\python\\python.exe");
    /* -I: nothing from the environment or the working directory on sys.path of a SYSTEM process. */
    lstrcpyW(line, L"\"");
    lstrcatW(line, python);
    lstrcatW(line, L"\" -I -m p2pdist.agent --config \"");
    lstrcatW(line, data);
    lstrcatW(line, L"\\agent.toml\"");

    HANDLE log = open_log(data);
    HANDLE job = CreateJobObjectW(NULL, NULL);
    if (job != NULL) {
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits;
        ZeroMemory(&limits, sizeof limits);
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        SetInformationJobObject(job, JobObjectExtendedLimitInformation, &limits, sizeof limits);
    }
    STARTUPINFOW startup;
    ZeroMemory(&startup, sizeof startup);
    startup.cb = sizeof startup;
    startup.dwFlags = STARTF_USESTDHANDLES;
    startup.hStdInput = NULL;
    startup.hStdOutput = log;
    startup.hStdError = log;
    PROCESS_INFORMATION child;
    /* CREATE_NO_WINDOW: a console of its own that nobody sees, so python's streams and
     * Ctrl-Break handling work as on a console; the stop itself comes through the event. */
    if (!CreateProcessW(python, line, NULL, NULL, TRUE, CREATE_NO_WINDOW | CREATE_SUSPENDED, NULL, folder, &startup, &child)) {
        DWORD error = GetLastError();
        char text[160];  /* the reason, on disk where install.cmd and an administrator look */
        int length = wsprintfA(text, "p2pdist-service: cannot start python\\python.exe beside it (Windows error %lu)\r\n", error);
        DWORD written;
        WriteFile(log, text, (DWORD)length, &written, NULL);
        CloseHandle(log);
        report(SERVICE_STOPPED, error, 0, 0);
        return;
    }
    if (job != NULL)
        AssignProcessToJobObject(job, child.hProcess);
    ResumeThread(child.hThread);
    CloseHandle(child.hThread);
    if (log != INVALID_HANDLE_VALUE)
        CloseHandle(log);
    report(SERVICE_RUNNING, NO_ERROR, 0, 0);

    /* Until the agent ends: on a stop, set its event (again at each checkpoint until it exists:
     * an agent still starting has not made it yet), keep the SCM informed, and past the
     * deadline end the agent (resume data is then as of its last periodic save). */
    wchar_t event_name[64];
    wsprintfW(event_name, L"p2pdist-agent-stop-%lu", child.dwProcessId);
    HANDLE waits[2] = {child.hProcess, wake};
    DWORD waited = 0;
    BOOL delivered = FALSE;
    for (;;) {
        DWORD woke = WaitForMultipleObjects(2, waits, FALSE, CHECKPOINT_MS);
        if (woke == WAIT_OBJECT_0 || woke == WAIT_FAILED)
            break;
        if (!stopping)
            continue;
        if (!delivered) {
            HANDLE event = OpenEventW(EVENT_MODIFY_STATE, FALSE, event_name);
            if (event != NULL) {
                delivered = SetEvent(event);
                CloseHandle(event);
            }
        }
        if (woke == WAIT_OBJECT_0 + 1)
            continue;
        waited += CHECKPOINT_MS;
        if (waited >= STOP_DEADLINE_MS) {
            TerminateProcess(child.hProcess, ERROR_TIMEOUT);
            WaitForSingleObject(child.hProcess, 5000);
            break;
        }
        report(SERVICE_STOP_PENDING, NO_ERROR, 0, CHECKPOINT_MS * 2);
    }
    DWORD code = 1;
    GetExitCodeProcess(child.hProcess, &code);
    CloseHandle(child.hProcess);
    if (stopping) {
        report(SERVICE_STOPPED, code == 0 ? NO_ERROR : ERROR_SERVICE_SPECIFIC_ERROR, code, 0);
    } else {
        /* The agent ended unasked. Ending without reporting SERVICE_STOPPED is what every
         * Windows version counts as a failure, so the failure actions restart the service; the
         * failure-actions flag of Vista and later is not needed for that. (Wine 8 goes on
         * saying "running"; p2pdist/winsetup/scm.py checks this host's process itself.) */
        ExitProcess(code ? code : 1);
    }
    if (job != NULL)
        CloseHandle(job);
}

int wmain(void) {
    SERVICE_TABLE_ENTRYW table[] = {{SERVICE_NAME, service_main}, {NULL, NULL}};
    if (!StartServiceCtrlDispatcherW(table)) {
        DWORD error = GetLastError();
        if (error == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) {
            static const char text[] = "p2pdist-service.exe is started by the Service Control Manager "
                                       "(sc start p2pdist); on a console run p2pdist.exe agent\r\n";
            DWORD done;
            WriteFile(GetStdHandle(STD_ERROR_HANDLE), text, sizeof text - 1, &done, NULL);
        }
        return (int)error;
    }
    return 0;
}
