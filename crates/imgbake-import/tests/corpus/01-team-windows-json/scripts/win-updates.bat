@echo off
rem Install all pending software updates through the Windows Update Agent API.
rem Packer uploads this file and runs it with cmd /c; a non-zero exit fails the build.
setlocal

echo Searching for Windows updates...
powershell.exe -NoProfile -ExecutionPolicy Bypass -Command ^
  "$session = New-Object -ComObject Microsoft.Update.Session;" ^
  "$searcher = $session.CreateUpdateSearcher();" ^
  "$result = $searcher.Search(\"IsInstalled=0 and Type='Software'\");" ^
  "if ($result.Updates.Count -eq 0) { Write-Output 'No updates to install.'; exit 0 };" ^
  "$downloader = $session.CreateUpdateDownloader(); $downloader.Updates = $result.Updates; $downloader.Download() | Out-Null;" ^
  "$installer = $session.CreateUpdateInstaller(); $installer.Updates = $result.Updates;" ^
  "$outcome = $installer.Install();" ^
  "Write-Output ('Installed {0} updates, result code {1}' -f $result.Updates.Count, $outcome.ResultCode);" ^
  "if ($outcome.ResultCode -gt 3) { exit 1 }"
if errorlevel 1 (
  echo Windows Update failed with %errorlevel%
  exit /b 1
)

echo Windows updates installed.
endlocal
exit /b 0
