//! The vSphere calls the builder makes, typed: about fifteen methods of the vim25 API over
//! [`crate::soap`]. Each returns what the builder needs and nothing more.

use std::collections::BTreeMap;
use std::time::Duration;

use imgbake_core::wait::{self, Poll, Wait};

use crate::soap::{Client, Node, SoapError, esc};

/// A managed object reference: `VirtualMachine` `vm-42`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    /// Its type (`VirtualMachine`, `Folder`, `Task`...).
    pub kind: String,
    /// Its id (`vm-42`).
    pub value: String,
}

impl MoRef {
    /// A reference.
    pub fn new(kind: &str, value: &str) -> MoRef {
        MoRef { kind: kind.to_string(), value: value.to_string() }
    }

    /// As the element `tag`.
    pub fn xml(&self, tag: &str) -> String {
        format!("<{tag} type=\"{}\">{}</{tag}>", esc(&self.kind), esc(&self.value))
    }

    /// From an element carrying one.
    pub fn of(n: &Node) -> Option<MoRef> {
        Some(MoRef { kind: n.kind.clone()?, value: n.text.trim().to_string() })
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The properties read of one object, by path (`name`, `config.extraConfig`...).
pub type Props = BTreeMap<String, Node>;

/// Text of a property.
pub fn text<'a>(props: &'a Props, path: &str) -> Option<&'a str> {
    props.get(path).map(|n| n.text.as_str())
}

/// `config.extraConfig` as key → value.
pub fn extra_config(props: &Props) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(list) = props.get("config.extraConfig") {
        for o in list.all("OptionValue") {
            if let (Some(k), Some(v)) = (o.text_at(&["key"]), o.text_at(&["value"])) {
                // A key set twice (vcsim keeps both): the last one wins, as on a real vCenter.
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

/// The root objects of the API.
#[derive(Clone, Debug)]
pub struct ServiceContent {
    /// The inventory root.
    pub root_folder: MoRef,
    /// Reads properties.
    pub property_collector: MoRef,
    /// Finds objects by inventory path.
    pub search_index: MoRef,
    /// Logs in and out.
    pub session_manager: MoRef,
    /// Makes container views.
    pub view_manager: MoRef,
    /// `VMware vCenter Server 6.5.0 ...`, for messages.
    pub full_name: String,
}

/// A session with a vCenter or ESXi.
#[derive(Clone, Debug)]
pub struct Vim {
    client: Client,
    sc: ServiceContent,
    login: std::sync::Arc<std::sync::Mutex<Option<Credentials>>>,
}

/// What [`Vim::login`] used, to log in again when vCenter has expired an idle session (a long
/// provisioning phase makes no API call for hours).
#[derive(Clone)]
struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <sensitive>)", self.user)
    }
}

fn need(n: &Node, path: &[&str], method: &str) -> Result<MoRef, SoapError> {
    n.at(path).and_then(MoRef::of).ok_or_else(|| SoapError::Protocol {
        method: method.to_string(),
        status: 200,
        detail: format!("no {} in the answer", path.join(".")),
    })
}

impl Vim {
    /// Read the service content (no login yet).
    pub async fn connect(client: Client) -> Result<Vim, SoapError> {
        let m = "RetrieveServiceContent";
        let r = client.call(m, "<_this type=\"ServiceInstance\">ServiceInstance</_this>").await?;
        let sc = ServiceContent {
            root_folder: need(&r, &["returnval", "rootFolder"], m)?,
            property_collector: need(&r, &["returnval", "propertyCollector"], m)?,
            search_index: need(&r, &["returnval", "searchIndex"], m)?,
            session_manager: need(&r, &["returnval", "sessionManager"], m)?,
            view_manager: need(&r, &["returnval", "viewManager"], m)?,
            full_name: r.text_at(&["returnval", "about", "fullName"]).unwrap_or("vSphere").to_string(),
        };
        Ok(Vim { client, sc, login: Default::default() })
    }

    /// The service's name and version.
    pub fn about(&self) -> &str {
        &self.sc.full_name
    }

    /// The transport (for request counts).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Log in; the session cookie is kept by the client.
    pub async fn login(&self, user: &str, password: &str) -> Result<(), SoapError> {
        let args = format!(
            "{}<userName>{}</userName><password>{}</password>",
            self.sc.session_manager.xml("_this"),
            esc(user),
            esc(password)
        );
        self.client.call("Login", &args).await?;
        if let Ok(mut l) = self.login.lock() {
            *l = Some(Credentials { user: user.to_string(), password: password.to_string() });
        }
        Ok(())
    }

    /// Call `method`; when vCenter says the session is gone (`NotAuthenticated`: it expires idle
    /// sessions), log in again once and retry.
    async fn call(&self, method: &str, args: &str) -> Result<Node, SoapError> {
        match self.client.call(method, args).await {
            Err(e) if e.fault() == Some("NotAuthenticated") => {
                let creds = self.login.lock().ok().and_then(|l| l.clone());
                let Some(c) = creds else { return Err(e) };
                self.login(&c.user, &c.password).await?;
                self.client.call(method, args).await
            }
            r => r,
        }
    }

    /// Log out (best effort: the session expires anyway).
    pub async fn logout(&self) {
        let _ = self.client.call("Logout", &self.sc.session_manager.xml("_this")).await;
    }

    /// The object at an inventory path (`/DC0/vm/base`), if any.
    pub async fn find_by_path(&self, path: &str) -> Result<Option<MoRef>, SoapError> {
        let args = format!("{}<inventoryPath>{}</inventoryPath>", self.sc.search_index.xml("_this"), esc(path));
        let r = self.call("FindByInventoryPath", &args).await?;
        Ok(r.child("returnval").and_then(MoRef::of))
    }

    /// Read `props` of one object.
    pub async fn properties(&self, obj: &MoRef, props: &[&str]) -> Result<Props, SoapError> {
        let spec = filter_spec(&obj.kind, props, &format!("{}<skip>false</skip>", obj.xml("obj")));
        let mut all = self.retrieve(&spec).await?;
        Ok(all.pop().map(|(_, p)| p).unwrap_or_default())
    }

    /// Read `props` of every object of type `kind` under `container` (recursively).
    pub async fn all_of(
        &self,
        container: &MoRef,
        kind: &str,
        props: &[&str],
    ) -> Result<Vec<(MoRef, Props)>, SoapError> {
        let args = format!(
            "{}{}<type>{}</type><recursive>true</recursive>",
            self.sc.view_manager.xml("_this"),
            container.xml("container"),
            esc(kind)
        );
        let r = self.call("CreateContainerView", &args).await?;
        let view = need(&r, &["returnval"], "CreateContainerView")?;
        let objects = format!(
            "{}<skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>view</name><type>ContainerView</type><path>view</path><skip>false</skip></selectSet>",
            view.xml("obj")
        );
        let found = self.retrieve(&filter_spec(kind, props, &objects)).await;
        let _ = self.call("DestroyView", &view.xml("_this")).await;
        found
    }

    async fn retrieve(&self, spec: &str) -> Result<Vec<(MoRef, Props)>, SoapError> {
        let pc = self.sc.property_collector.xml("_this");
        let mut r = self.call("RetrievePropertiesEx", &format!("{pc}{spec}<options></options>")).await?;
        let mut out = Vec::new();
        loop {
            let Some(ret) = r.child("returnval") else { return Ok(out) };
            for o in ret.all("objects") {
                let Some(obj) = o.child("obj").and_then(MoRef::of) else { continue };
                let props = o
                    .all("propSet")
                    .filter_map(|p| Some((p.text_at(&["name"])?.to_string(), p.child("val")?.clone())))
                    .collect();
                out.push((obj, props));
            }
            let Some(token) = ret.text_at(&["token"]) else { return Ok(out) };
            let args = format!("{pc}<token>{}</token>", esc(token));
            r = self.call("ContinueRetrievePropertiesEx", &args).await?;
        }
    }

    /// Every datacenter: (reference, name).
    pub async fn datacenters(&self) -> Result<Vec<(MoRef, String)>, SoapError> {
        let root = self.sc.root_folder.clone();
        let found = self.all_of(&root, "Datacenter", &["name"]).await?;
        Ok(found.into_iter().map(|(m, p)| (m, text(&p, "name").unwrap_or_default().to_string())).collect())
    }

    /// Start cloning `vm` into `folder` as `name`; returns the task.
    pub async fn clone_vm(&self, vm: &MoRef, folder: &MoRef, name: &str, spec: &str) -> Result<MoRef, SoapError> {
        let args = format!("{}{}<name>{}</name><spec>{spec}</spec>", vm.xml("_this"), folder.xml("folder"), esc(name));
        self.task_call("CloneVM_Task", &args).await
    }

    /// Start reconfiguring `vm` with a `VirtualMachineConfigSpec` body; returns the task.
    pub async fn reconfigure(&self, vm: &MoRef, spec: &str) -> Result<MoRef, SoapError> {
        self.task_call("ReconfigVM_Task", &format!("{}<spec>{spec}</spec>", vm.xml("_this"))).await
    }

    /// Start powering `vm` on; returns the task.
    pub async fn power_on(&self, vm: &MoRef) -> Result<MoRef, SoapError> {
        self.task_call("PowerOnVM_Task", &vm.xml("_this")).await
    }

    /// Start powering `vm` off (hard); returns the task.
    pub async fn power_off(&self, vm: &MoRef) -> Result<MoRef, SoapError> {
        self.task_call("PowerOffVM_Task", &vm.xml("_this")).await
    }

    /// Ask the guest (through VMware Tools) to shut down; returns at once.
    pub async fn shutdown_guest(&self, vm: &MoRef) -> Result<(), SoapError> {
        self.call("ShutdownGuest", &vm.xml("_this")).await.map(|_| ())
    }

    /// Mark a powered-off VM as a template.
    pub async fn mark_as_template(&self, vm: &MoRef) -> Result<(), SoapError> {
        self.call("MarkAsTemplate", &vm.xml("_this")).await.map(|_| ())
    }

    /// Start deleting `vm` with its disks; returns the task.
    pub async fn destroy(&self, vm: &MoRef) -> Result<MoRef, SoapError> {
        self.task_call("Destroy_Task", &vm.xml("_this")).await
    }

    async fn task_call(&self, method: &str, args: &str) -> Result<MoRef, SoapError> {
        let r = self.call(method, args).await?;
        need(&r, &["returnval"], method)
    }

    /// Wait for `task` to finish: its result, or its fault as [`SoapError::Fault`] named `what`. The
    /// session stays usable either way.
    pub async fn wait_task(&self, task: &MoRef, what: &str, timeout: Duration) -> Result<Option<Node>, SoapError> {
        let w = Wait::new(timeout).interval(Duration::from_millis(200), Duration::from_secs(3));
        let r = wait::until(&w, what, || async {
            let p = match self.properties(task, &["info.state", "info.error", "info.result"]).await {
                Ok(p) => p,
                Err(e) if e.is_transient() => return Poll::Pending(e.to_string()),
                Err(e) => return Poll::Failed(e),
            };
            match text(&p, "info.state").unwrap_or("queued") {
                "success" => Poll::Ready(p.get("info.result").cloned()),
                "error" => Poll::Failed(task_fault(what, p.get("info.error"))),
                other => Poll::Pending(other.to_string()),
            }
        })
        .await;
        r.map_err(|e| match e {
            wait::WaitError::Failed(e) => e,
            wait::WaitError::TimedOut { .. } => {
                SoapError::Timeout { url: self.client.url(), method: what.to_string(), timeout }
            }
        })
    }
}

/// A task's `LocalizedMethodFault`: its message, and the fault's type.
fn task_fault(what: &str, error: Option<&Node>) -> SoapError {
    let message = error
        .and_then(|e| e.text_at(&["localizedMessage"]))
        .filter(|m| !m.is_empty())
        .unwrap_or("the task failed without a message")
        .to_string();
    let fault = error
        .and_then(|e| e.child("fault"))
        .and_then(|f| f.xsi_type.clone())
        .unwrap_or_else(|| "TaskFailed".to_string());
    SoapError::Fault { method: what.to_string(), fault, message }
}

/// A `PropertyFilterSpec` reading `props` of objects of `kind` found from `objects` (an
/// `ObjectSpec` body).
fn filter_spec(kind: &str, props: &[&str], objects: &str) -> String {
    let paths: String = props.iter().map(|p| format!("<pathSet>{}</pathSet>", esc(p))).collect();
    format!(
        "<specSet><propSet><type>{}</type><all>false</all>{paths}</propSet><objectSet>{objects}</objectSet></specSet>",
        esc(kind)
    )
}

/// One `extraConfig` entry of a `VirtualMachineConfigSpec`.
pub fn option_value(key: &str, value: &str) -> String {
    format!("<extraConfig><key>{}</key><value xsi:type=\"xsd:string\">{}</value></extraConfig>", esc(key), esc(value))
}
