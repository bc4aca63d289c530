<powershell>
# EC2 user data: set the Administrator password Packer was given and open WinRM
# over HTTP (port 5985) for the build security group.
# The password lives in SSM Parameter Store; the pipeline passes the same value
# to Packer as -var winrm_password. It is never committed.
$ErrorActionPreference = "Stop"

$password = (Get-SSMParameter -Name "/packer/windows/admin-password" -WithDecryption $true).Value
net user Administrator $password
wmic useraccount where "name='Administrator'" set PasswordExpires=FALSE

winrm quickconfig -q
winrm set winrm/config '@{MaxTimeoutms="1800000"}'
winrm set winrm/config/winrs '@{MaxMemoryPerShellMB="1024"}'
winrm set winrm/config/service '@{AllowUnencrypted="true"}'
winrm set winrm/config/service/auth '@{Basic="true"}'

netsh advfirewall firewall add rule name="WinRM 5985" protocol=TCP dir=in localport=5985 action=allow
net stop winrm
sc.exe config winrm start= auto
net start winrm
</powershell>
