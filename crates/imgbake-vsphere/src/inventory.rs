//! Logging in and finding things: the datacenter, where build VMs go (folder, resource pool, host,
//! datastore, network), and the VM or template to clone. Every "not found" names what was looked
//! for and where, and lists what exists when that helps.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use imgbake_core::error::{BuildError, ErrorKind};

use crate::settings::VsphereSettings;
use crate::soap::{Client, SoapError, Tls};
use crate::vim::{MoRef, Vim, text};

/// Where the credentials come from when the tree does not say.
#[derive(Clone, Debug, Default)]
pub enum Environment {
    /// The process environment (`VSPHERE_*`, `GOVC_*`).
    #[default]
    Process,
    /// Exactly these variables (tests, embedding tools).
    Fixed(BTreeMap<String, String>),
}

impl Environment {
    /// A variable's value (empty counts as unset).
    pub fn get(&self, name: &str) -> Option<String> {
        let v = match self {
            Environment::Process => std::env::var(name).ok(),
            Environment::Fixed(m) => m.get(name).cloned(),
        };
        v.filter(|v| !v.is_empty())
    }
}

/// How to reach one vCenter or ESXi as one user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// The URL as given.
    pub url: String,
    /// The user.
    pub username: String,
    /// The variable holding the password.
    pub password_env: String,
    /// Accept any certificate.
    pub insecure: bool,
    /// Extra CA certificates.
    pub ca_file: Option<PathBuf>,
}

fn config(message: String) -> BuildError {
    BuildError::new(ErrorKind::Config, message)
}

impl Endpoint {
    /// The endpoint of settings `s` (of image `image`), with the environment's fallbacks.
    pub fn of(
        s: &VsphereSettings,
        env: &Environment,
        tree: &imgbake_config::Tree,
        image: &str,
    ) -> Result<Endpoint, BuildError> {
        let first = |names: &[&str]| names.iter().find_map(|n| env.get(n));
        let url = s.url.as_ref().map(|u| u.get_ref().clone()).or_else(|| first(&["VSPHERE_URL", "GOVC_URL"]));
        let url = url.ok_or_else(|| {
            config(format!(
                "image `{image}`: no vSphere URL: set vsphere.url, or VSPHERE_URL / GOVC_URL in the environment"
            ))
        })?;
        let username =
            s.username.as_ref().map(|u| u.get_ref().clone()).or_else(|| first(&["VSPHERE_USER", "GOVC_USERNAME"]));
        let username = username.ok_or_else(|| {
            config(format!(
                "image `{image}`: no vSphere user: set vsphere.username, or VSPHERE_USER / GOVC_USERNAME in the environment"
            ))
        })?;
        let password_env = match &s.password_env {
            Some(p) => p.get_ref().clone(),
            None if env.get("VSPHERE_PASSWORD").is_none() && env.get("GOVC_PASSWORD").is_some() => {
                "GOVC_PASSWORD".into()
            }
            None => "VSPHERE_PASSWORD".into(),
        };
        let insecure =
            s.insecure.unwrap_or_else(|| env.get("GOVC_INSECURE").is_some_and(|v| matches!(v.as_str(), "1" | "true")));
        let ca_file =
            s.ca_file.as_ref().map(|f| tree.path(f)).or_else(|| env.get("GOVC_TLS_CA_CERTS").map(PathBuf::from));
        Ok(Endpoint { url, username, password_env, insecure, ca_file })
    }

    /// Connect and log in.
    pub async fn login(&self, env: &Environment, timeout: Duration) -> Result<Vim, BuildError> {
        let password = env.get(&self.password_env).ok_or_else(|| {
            config(format!(
                "no password for {} at {}: set the environment variable {}",
                self.username, self.url, self.password_env
            ))
        })?;
        let tls = Tls { insecure: self.insecure, ca_file: self.ca_file.clone() };
        // Reads the system's and the CA file's certificates: file I/O, kept off the async workers.
        let url = self.url.clone();
        let client = tokio::task::spawn_blocking(move || Client::new(&url, &tls, timeout))
            .await
            .map_err(|e| BuildError::new(ErrorKind::Internal, format!("setting up TLS for {}: {e}", self.url)))?
            .map_err(|e| self.error("connecting to", e))?;
        let vim = Vim::connect(client).await.map_err(|e| self.error("connecting to", e))?;
        vim.login(&self.username, &password).await.map_err(|e| match e.fault() {
            Some("InvalidLogin") => config(format!(
                "vSphere at {} refused the login of {}: check the user and the password in {}",
                self.url, self.username, self.password_env
            )),
            _ => self.error("logging in to", e),
        })?;
        Ok(vim)
    }

    fn error(&self, doing: &str, e: SoapError) -> BuildError {
        let kind = match &e {
            SoapError::Tls(_) | SoapError::Url { .. } => ErrorKind::Config,
            SoapError::Timeout { .. } => ErrorKind::Timeout,
            _ => ErrorKind::Platform,
        };
        let hint = match &e {
            SoapError::Transport { message, .. } if message.contains("certificate") => {
                "; trust its certificate with vsphere.ca_file (or, for a lab only, insecure = true)"
            }
            _ => "",
        };
        BuildError::new(kind, format!("{doing} vSphere at {}: {e}{hint}", self.url))
    }
}

/// A vSphere error while doing `doing`.
pub fn platform(doing: &str, e: SoapError) -> BuildError {
    let kind = if matches!(e, SoapError::Timeout { .. }) { ErrorKind::Timeout } else { ErrorKind::Platform };
    BuildError::new(kind, format!("{doing}: {e}"))
}

/// Where one image's build VMs and templates go.
#[derive(Clone, Debug)]
pub struct Place {
    /// The datacenter's inventory path (`/DC0`).
    pub dc_path: String,
    /// The datacenter.
    pub dc: MoRef,
    /// The VM folder, and its path.
    pub folder: (MoRef, String),
    /// The resource pool.
    pub pool: MoRef,
    /// The host, when given.
    pub host: Option<MoRef>,
    /// The datastore, when given.
    pub datastore: Option<MoRef>,
    /// The network of the first adapter, when given.
    pub network: Option<MoRef>,
}

fn absolute(dc_path: &str, under: &str, p: &str) -> String {
    if p.starts_with('/') { p.to_string() } else { format!("{dc_path}/{under}/{}", p.trim_matches('/')) }
}

async fn must_find(vim: &Vim, path: &str, what: &str, kinds: &[&str]) -> Result<MoRef, BuildError> {
    let found = vim.find_by_path(path).await.map_err(|e| platform(&format!("looking up the {what} {path}"), e))?;
    match found {
        Some(m) if kinds.is_empty() || kinds.contains(&m.kind.as_str()) => Ok(m),
        Some(m) => Err(config(format!("{path} is a {}, not a {what}", m.kind))),
        None => Err(config(format!("no {what} at {path} in vSphere ({})", vim.about()))),
    }
}

/// The datacenter of settings `s`: the one named, or the only one.
pub async fn datacenter(vim: &Vim, s: &VsphereSettings) -> Result<(MoRef, String), BuildError> {
    if let Some(dc) = &s.datacenter {
        let path = format!("/{}", dc.get_ref().trim_matches('/'));
        return Ok((must_find(vim, &path, "datacenter", &["Datacenter"]).await?, path));
    }
    let all = vim.datacenters().await.map_err(|e| platform("listing datacenters", e))?;
    match all.as_slice() {
        [(m, name)] => Ok((m.clone(), format!("/{name}"))),
        [] => Err(config("vSphere has no datacenter".into())),
        many => Err(config(format!(
            "vSphere has {} datacenters ({}): set vsphere.datacenter",
            many.len(),
            many.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Resolve every placement setting of `s`.
pub async fn place(vim: &Vim, s: &VsphereSettings) -> Result<Place, BuildError> {
    let (dc, dc_path) = datacenter(vim, s).await?;
    let folder_path = match &s.folder {
        Some(f) => absolute(&dc_path, "vm", f.get_ref()),
        None => format!("{dc_path}/vm"),
    };
    let folder = must_find(vim, &folder_path, "VM folder", &["Folder"]).await?;
    let host = match &s.host {
        Some(h) => Some(host(vim, &dc_path, s.cluster.as_ref().map(|c| c.get_ref().as_str()), h.get_ref()).await?),
        None => None,
    };
    let pool = pool(vim, &dc_path, s, host.as_ref()).await?;
    let datastore = match &s.datastore {
        Some(d) => {
            Some(must_find(vim, &absolute(&dc_path, "datastore", d.get_ref()), "datastore", &["Datastore"]).await?)
        }
        None => None,
    };
    let network = match &s.network {
        Some(n) => Some(
            must_find(
                vim,
                &absolute(&dc_path, "network", n.get_ref()),
                "network",
                &["Network", "DistributedVirtualPortgroup", "OpaqueNetwork"],
            )
            .await?,
        ),
        None => None,
    };
    Ok(Place { dc_path, dc, folder: (folder, folder_path), pool, host, datastore, network })
}

async fn host(vim: &Vim, dc_path: &str, cluster: Option<&str>, name: &str) -> Result<MoRef, BuildError> {
    if name.starts_with('/') {
        return must_find(vim, name, "host", &["HostSystem"]).await;
    }
    // A host in a cluster is CLUSTER/HOST; a standalone host's HostSystem sits under its own
    // compute resource of the same name.
    let candidates = match cluster {
        Some(c) => vec![format!("{dc_path}/host/{c}/{name}")],
        None => vec![format!("{dc_path}/host/{name}/{name}"), format!("{dc_path}/host/{name}")],
    };
    for path in &candidates {
        if let Some(m) =
            vim.find_by_path(path).await.map_err(|e| platform(&format!("looking up the host {path}"), e))?
            && m.kind == "HostSystem"
        {
            return Ok(m);
        }
    }
    Err(config(format!("no host `{name}` in {dc_path} (looked at {})", candidates.join(", "))))
}

async fn pool(vim: &Vim, dc_path: &str, s: &VsphereSettings, host: Option<&MoRef>) -> Result<MoRef, BuildError> {
    let compute = match (&s.cluster, &s.host) {
        (Some(c), _) => Some(format!("{dc_path}/host/{}", c.get_ref())),
        (None, Some(h)) if !h.get_ref().starts_with('/') => Some(format!("{dc_path}/host/{}", h.get_ref())),
        _ => None,
    };
    if let Some(rp) = &s.resource_pool {
        let path = match (rp.get_ref().starts_with('/'), &compute) {
            (true, _) => rp.get_ref().clone(),
            (false, Some(c)) => format!("{c}/Resources/{}", rp.get_ref().trim_matches('/')),
            (false, None) => format!("{dc_path}/host/{}", rp.get_ref().trim_matches('/')),
        };
        return must_find(vim, &path, "resource pool", &["ResourcePool", "VirtualApp"]).await;
    }
    if let Some(c) = compute {
        return must_find(vim, &format!("{c}/Resources"), "resource pool", &["ResourcePool"]).await;
    }
    if let Some(h) = host {
        let parent = vim.properties(h, &["parent"]).await.map_err(|e| platform("reading the host's cluster", e))?;
        if let Some(cr) = parent.get("parent").and_then(MoRef::of) {
            let p =
                vim.properties(&cr, &["resourcePool"]).await.map_err(|e| platform("reading the resource pool", e))?;
            if let Some(rp) = p.get("resourcePool").and_then(MoRef::of) {
                return Ok(rp);
            }
        }
    }
    // Nothing said: the first compute resource's root pool (the only one on an ESXi).
    let dc = must_find(vim, dc_path, "datacenter", &["Datacenter"]).await?;
    for kind in ["ClusterComputeResource", "ComputeResource"] {
        let found =
            vim.all_of(&dc, kind, &["name", "resourcePool"]).await.map_err(|e| platform("listing clusters", e))?;
        if let Some((_, p)) = found.into_iter().min_by(|a, b| text(&a.1, "name").cmp(&text(&b.1, "name")))
            && let Some(rp) = p.get("resourcePool").and_then(MoRef::of)
        {
            return Ok(rp);
        }
    }
    Err(config(format!("{dc_path} has no cluster or host to run the build VM on")))
}

/// The VM or template `name_or_path` (a path, relative to the datacenter's VM folder or absolute,
/// or a bare name searched in the datacenter).
pub async fn find_vm(vim: &Vim, dc: &MoRef, dc_path: &str, name_or_path: &str) -> Result<Option<MoRef>, BuildError> {
    let path = absolute(dc_path, "vm", name_or_path);
    if let Some(m) = vim.find_by_path(&path).await.map_err(|e| platform(&format!("looking up {path}"), e))? {
        return Ok(Some(m));
    }
    if name_or_path.contains('/') {
        return Ok(None);
    }
    let all = vim.all_of(dc, "VirtualMachine", &["name"]).await.map_err(|e| platform("listing VMs", e))?;
    let mut same: Vec<MoRef> =
        all.into_iter().filter(|(_, p)| text(p, "name") == Some(name_or_path)).map(|(m, _)| m).collect();
    match same.len() {
        0 | 1 => Ok(same.pop()),
        n => Err(config(format!(
            "{n} VMs are named `{name_or_path}` in {dc_path}: give the template's inventory path instead"
        ))),
    }
}
