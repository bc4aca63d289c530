# Stamp the template with the patch month and the list of installed hotfixes.
$ErrorActionPreference = "Stop"

$key = "HKLM:\SOFTWARE\Acme\Template"
New-Item -Path $key -Force | Out-Null
Set-ItemProperty -Path $key -Name PatchMonth -Value $env:PATCH_MONTH
Set-ItemProperty -Path $key -Name PatchedOn -Value (Get-Date -Format "yyyy-MM-dd")

$hotfixes = Get-HotFix | Sort-Object InstalledOn | Select-Object -ExpandProperty HotFixID
Set-ItemProperty -Path $key -Name HotFixes -Value ($hotfixes -join ",")
Write-Output ("{0} hotfixes installed" -f $hotfixes.Count)
