# Entry point for masterless runs driven by lab-converge.pkr.hcl
node default {
  include profile::base
}
