//! A VM's lifecycle, together: clone, reconfigure, power on, wait for its address, shut down, mark
//! as template, destroy. Every task's fault comes back as an error with vSphere's message.

use std::time::Duration;

use imgbake_core::wait::{self, Poll, Wait};

use crate::inventory::Place;
use crate::soap::{SoapError, esc};
use crate::vim::{MoRef, Vim, text};

/// The clone's placement, as a `VirtualMachineRelocateSpec` body (element order is the schema's).
fn relocate(place: &Place, linked: bool) -> String {
    let mut s = String::new();
    if let Some(ds) = &place.datastore {
        s.push_str(&ds.xml("datastore"));
    }
    if linked {
        s.push_str("<diskMoveType>createNewChildDiskBacking</diskMoveType>");
    }
    s.push_str(&place.pool.xml("pool"));
    if let Some(h) = &place.host {
        s.push_str(&h.xml("host"));
    }
    s
}

/// Clone `source` to a powered-off VM named `name` in the place's folder, carrying the extraConfig
/// entries `extra` from its first moment; linked to `snapshot` when given. Returns the new VM.
pub async fn clone(
    vim: &Vim,
    source: &MoRef,
    place: &Place,
    name: &str,
    snapshot: Option<&MoRef>,
    extra: &str,
    timeout: Duration,
) -> Result<MoRef, SoapError> {
    let mut spec = format!("<location>{}</location><template>false</template>", relocate(place, snapshot.is_some()));
    if !extra.is_empty() {
        spec.push_str(&format!("<config>{extra}</config>"));
    }
    spec.push_str("<powerOn>false</powerOn>");
    if let Some(s) = snapshot {
        spec.push_str(&s.xml("snapshot"));
    }
    let task = vim.clone_vm(source, &place.folder.0, name, &spec).await?;
    let result = vim.wait_task(&task, &format!("cloning {source} to {name}"), timeout).await?;
    result.as_ref().and_then(MoRef::of).ok_or_else(|| SoapError::Protocol {
        method: "CloneVM_Task".into(),
        status: 200,
        detail: "the finished clone task names no VM".into(),
    })
}

/// Apply a `VirtualMachineConfigSpec` body and wait for it.
pub async fn reconfigure(vim: &Vim, vm: &MoRef, spec: &str, what: &str, timeout: Duration) -> Result<(), SoapError> {
    let task = vim.reconfigure(vm, spec).await?;
    vim.wait_task(&task, what, timeout).await.map(|_| ())
}

/// Its power state: `poweredOn`, `poweredOff`, `suspended`.
pub async fn power_state(vim: &Vim, vm: &MoRef) -> Result<String, SoapError> {
    let p = vim.properties(vm, &["runtime.powerState"]).await?;
    Ok(text(&p, "runtime.powerState").unwrap_or("unknown").to_string())
}

/// Power on and wait for the task.
pub async fn power_on(vim: &Vim, vm: &MoRef, timeout: Duration) -> Result<(), SoapError> {
    let task = vim.power_on(vm).await?;
    vim.wait_task(&task, &format!("powering on {vm}"), timeout).await.map(|_| ())
}

/// Power off (hard) unless already off.
pub async fn power_off(vim: &Vim, vm: &MoRef, timeout: Duration) -> Result<(), SoapError> {
    if power_state(vim, vm).await? == "poweredOff" {
        return Ok(());
    }
    let task = vim.power_off(vm).await?;
    match vim.wait_task(&task, &format!("powering off {vm}"), timeout).await {
        // Off meanwhile (the guest shut down by itself): the goal holds.
        Err(e) if e.fault() == Some("InvalidPowerState") => Ok(()),
        r => r.map(|_| ()),
    }
}

/// The guest's IP address as VMware Tools reports it, waiting up to `timeout`.
pub async fn wait_ip(vim: &Vim, vm: &MoRef, poll: &Wait) -> Result<String, wait::WaitError<SoapError>> {
    wait::until(poll, &format!("VMware Tools to report {vm}'s IP address"), || async {
        match vim.properties(vm, &["guest.ipAddress", "runtime.powerState"]).await {
            Ok(p) => match (text(&p, "guest.ipAddress"), text(&p, "runtime.powerState")) {
                (_, Some("poweredOff")) => Poll::Failed(SoapError::Fault {
                    method: "waiting for the guest's address".into(),
                    fault: "InvalidPowerState".into(),
                    message: format!("{vm} powered off before it reported an address"),
                }),
                // Not an address to log in on: link-local (no DHCP lease yet) or IPv6 link-local.
                (Some(ip), _) if ip.starts_with("169.254.") || ip.starts_with("fe80:") => {
                    Poll::Pending(format!("only the link-local address {ip} so far"))
                }
                (Some(ip), _) if !ip.is_empty() => Poll::Ready(ip.to_string()),
                _ => Poll::Pending("no address yet".into()),
            },
            Err(e) if e.is_transient() => Poll::Pending(e.to_string()),
            Err(e) => Poll::Failed(e),
        }
    })
    .await
}

/// Ask the guest to shut down and wait until it is off; after `timeout` (or if the guest cannot be
/// asked: no VMware Tools), power it off. Returns whether the shutdown was clean.
pub async fn shut_down(vim: &Vim, vm: &MoRef, timeout: Duration, poll: &Wait) -> Result<bool, SoapError> {
    if power_state(vim, vm).await? == "poweredOff" {
        return Ok(true);
    }
    if vim.shutdown_guest(vm).await.is_ok() {
        let w = Wait { timeout, ..poll.clone() };
        let off = wait::until(&w, &format!("{vm} to shut down"), || async {
            match power_state(vim, vm).await {
                Ok(s) if s == "poweredOff" => Poll::<(), SoapError>::Ready(()),
                Ok(s) => Poll::Pending(s),
                Err(e) => Poll::Pending(e.to_string()),
            }
        })
        .await;
        if off.is_ok() {
            return Ok(true);
        }
    }
    power_off(vim, vm, timeout).await.map(|_| false)
}

/// Delete a VM or template with its disks (powering it off first). Gone already is success.
pub async fn destroy(vim: &Vim, vm: &MoRef, timeout: Duration) -> Result<(), SoapError> {
    let gone = |e: &SoapError| e.fault() == Some("ManagedObjectNotFound");
    match power_off(vim, vm, timeout).await {
        Err(e) if gone(&e) => return Ok(()),
        // A template cannot be powered on or off: go on and delete it.
        Err(e) if e.fault() == Some("InvalidState") || e.fault() == Some("NotSupported") => {}
        r => r?,
    }
    let task = match vim.destroy(vm).await {
        Err(e) if gone(&e) => return Ok(()),
        r => r?,
    };
    match vim.wait_task(&task, &format!("deleting {vm}"), timeout).await {
        Err(e) if gone(&e) => Ok(()),
        r => r.map(|_| ()),
    }
}

/// A `VirtualMachineConfigSpec` body: annotation, CPUs, memory, device changes, then extraConfig
/// entries (the schema's element order).
pub fn config_spec(
    notes: Option<&str>,
    cpus: Option<u32>,
    memory_mb: Option<u64>,
    devices: &str,
    extra: &str,
) -> String {
    let mut s = String::new();
    if let Some(n) = notes {
        s.push_str(&format!("<annotation>{}</annotation>", esc(n)));
    }
    if let Some(c) = cpus {
        s.push_str(&format!("<numCPUs>{c}</numCPUs>"));
    }
    if let Some(m) = memory_mb {
        s.push_str(&format!("<memoryMB>{m}</memoryMB>"));
    }
    s.push_str(devices);
    s.push_str(extra);
    s
}
