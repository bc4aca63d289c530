# /etc/profile.d/devbox.sh - shell defaults for the Acme developer box
export GOPATH="$HOME/go"
export PATH="/usr/local/go/bin:$GOPATH/bin:$PATH"
export EDITOR=vim
alias ll='ls -alF'
