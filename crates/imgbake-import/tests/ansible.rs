//! Packer's `ansible` provisioner (corpus case 16) becomes an `ansible` step: variables out of the
//! command line into `extra_vars`, host key checking never turned off.

use std::path::Path;

use imgbake_import::{ImportParams, import};

#[test]
fn the_ansible_provisioner_becomes_an_ansible_step() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/16-aws-ansible-ssm-hcl");
    let out = tempfile::tempdir().unwrap();
    let params = ImportParams {
        inputs: vec![dir.join("web-ami.pkr.hcl")],
        var_files: Vec::new(),
        chains: Vec::new(),
        output: out.path().join("tree.toml"),
        name: None,
    };
    let imported = import(&params).unwrap();
    let tree: toml::Table = toml::from_str(&imported.tree).unwrap_or_else(|e| panic!("{e}\n{}", imported.tree));
    let images = tree["images"].as_table().unwrap();
    let steps = images.values().find_map(|i| i.get("steps")).and_then(|s| s.as_array()).unwrap();
    let ansible = steps.iter().find_map(|s| s.get("ansible")).unwrap_or_else(|| panic!("{}", imported.tree));
    assert!(ansible["playbook"].as_str().unwrap().ends_with("ansible/site.yml"), "{ansible}");
    assert!(ansible["galaxy_file"].as_str().unwrap().ends_with("ansible/requirements.yml"), "{ansible}");
    let vars = ansible["extra_vars"].as_table().unwrap();
    assert_eq!(vars["env"].as_str(), Some("{{ var.environment }}"), "{ansible}");
    assert!(vars.contains_key("nginx_worker_connections"), "{ansible}");
    assert_eq!(ansible["extra_arguments"].as_array().unwrap(), &vec![toml::Value::String("-v".into())]);
    assert_eq!(ansible["groups"].as_array().unwrap().len(), 2);
    let env = ansible["env"].as_table().unwrap();
    assert!(!env.contains_key("ANSIBLE_HOST_KEY_CHECKING"), "host key checking is never turned off: {env:?}");
    assert!(env.contains_key("ANSIBLE_ROLES_PATH"));
    assert!(!imported.tree.contains("--extra-vars"));
}
