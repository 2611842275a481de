@echo off
rem p2pdist: remove everything install.cmd made (service, firewall rule, %windir% wrapper,
rem registry key, %ProgramFiles%\p2pdist, and the cache and state in %ProgramData%\p2pdist unless
rem --keep-data). Run elevated, from the SMS package or from %ProgramFiles%\p2pdist.
setlocal EnableDelayedExpansion
if defined PROCESSOR_ARCHITEW6432 (
  "%SystemRoot%\Sysnative\cmd.exe" /d /c ""%~f0" %*"
  exit /b
)
rem The program folder cannot be removed by a python running from it, so a copy of python and
rem lib in %TEMP% does the work; this script may itself be in the folder removed, so everything
rem after the copy is one block, which cmd.exe reads whole before it runs it.
set "work=%TEMP%\p2pdist-uninstall-%RANDOM%%RANDOM%"
"%~dp0python\python.exe" -I -m p2pdist.winsetup copy-runtime "!work!"
if errorlevel 1 exit /b 1
(
  cd /d "%TEMP%"
  "!work!\python\python.exe" -I -m p2pdist.winsetup uninstall %*
  set "code=!ERRORLEVEL!"
  rd /s /q "!work!" 2>nul
  exit /b !code!
)
