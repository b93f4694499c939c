# Sourced by the install-*.sh scripts: installs Debian packages without starting services.

# apt_install PKG...: apt-get install, running `apt-get update` first when the package lists
# are missing (a fresh machine), and forbidding packages to start their system services
# (with a temporary policy-rc.d answering 101, unless one is already in place).
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then
    $sudo apt-get update
  fi
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    made_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$@" || rc=$?
  if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi
  return "$rc"
}
