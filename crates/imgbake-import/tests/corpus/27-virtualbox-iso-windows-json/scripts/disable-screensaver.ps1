# Keep the console awake during the build.
Set-ItemProperty -Path "HKCU:\Control Panel\Desktop" -Name ScreenSaveActive -Value 0 -Type String
powercfg -change -monitor-timeout-ac 0
powercfg -change -standby-timeout-ac 0
