#!/bin/sh
# EC2-specific agents.
set -eu

snap install amazon-ssm-agent --classic || snap refresh amazon-ssm-agent
apt-get -y -q install ec2-instance-connect
