@echo off
rem p2pdist: install, or upgrade in place. Run elevated, e.g. as the program of an SMS package
rem made from this folder:   install.cmd http://SITESERVER:6969 PUBLIC_KEY_HEX [--port 6881]
rem                          install.cmd     (an upgrade that keeps agent.toml)
rem Installs into %ProgramFiles%\p2pdist, the wrapper into %windir%, the service "p2pdist";
rem cache and state stay in %ProgramData%\p2pdist. Every step: %ProgramData%\p2pdist\logs\install.log
rem and docs/windows.md. Exit 0 done, 1 a step failed, 2 wrong arguments.
setlocal
rem The SMS 2003 / SCCM 2007 client is 32-bit, so this script may start under WOW64, where
rem %ProgramFiles% is "Program Files (x86)" and System32 and HKLM\SOFTWARE are redirected.
rem The installation is 64-bit: start again in the 64-bit cmd.exe (Sysnative is its alias there).
if defined PROCESSOR_ARCHITEW6432 (
  "%SystemRoot%\Sysnative\cmd.exe" /d /c ""%~f0" %*"
  exit /b
)
rem -I: nothing from the environment or the current folder on sys.path.
"%~dp0python\python.exe" -I -m p2pdist.winsetup install %*
exit /b %ERRORLEVEL%
