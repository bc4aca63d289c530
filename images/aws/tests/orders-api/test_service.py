import subprocess


def test_unit_is_enabled():
    out = subprocess.run(["systemctl", "is-enabled", "orders-api"], capture_output=True, text=True)
    assert out.stdout.strip() == "enabled"


def test_java_is_installed():
    assert subprocess.run(["java", "-version"], capture_output=True).returncode == 0
