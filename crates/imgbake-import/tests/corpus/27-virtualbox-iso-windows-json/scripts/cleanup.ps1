# Shrink the box: component store cleanup, temp files, then zero free space.
$ErrorActionPreference = "Continue"

Dism.exe /Online /Cleanup-Image /StartComponentCleanup /ResetBase
Remove-Item -Recurse -Force "$env:windir\Temp\*", "$env:TEMP\*" -ErrorAction SilentlyContinue
Optimize-Volume -DriveLetter C -Defrag

$path = "C:\zero.tmp"
$volume = Get-Volume -DriveLetter C
$size = $volume.SizeRemaining - 512MB
$stream = [System.IO.File]::OpenWrite($path)
try {
    $buffer = New-Object byte[] (64MB)
    for ($written = 0; $written -lt $size; $written += $buffer.Length) {
        $stream.Write($buffer, 0, $buffer.Length)
    }
} finally {
    $stream.Close()
    Remove-Item $path -Force
}
exit 0
