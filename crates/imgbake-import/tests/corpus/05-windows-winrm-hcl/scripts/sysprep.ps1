# Generalise the instance with EC2Launch v2 so each launch gets a fresh SID,
# hostname and Administrator password. Packer stops the instance afterwards.
$ErrorActionPreference = "Stop"

$ec2launch = "C:\Program Files\Amazon\EC2Launch\ec2launch.exe"
& $ec2launch reset --block
& $ec2launch sysprep --block
