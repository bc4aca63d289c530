//! Hardware changes of the build VM: grow the first disk, add disks, put the first network adapter
//! on a network. Edits send back the device exactly as vSphere described it, with the changed
//! fields, so nothing else about it changes.

use crate::soap::{Node, esc};
use crate::vim::MoRef;

/// A SCSI controller's own unit number: never a disk's.
const CONTROLLER_UNIT: u32 = 7;

/// An element back as XML (the `xsi:type` and `type` attributes kept).
pub fn to_xml(n: &Node) -> String {
    let mut attrs = String::new();
    if let Some(t) = &n.xsi_type {
        attrs.push_str(&format!(" xsi:type=\"{}\"", esc(t)));
    }
    if let Some(k) = &n.kind {
        attrs.push_str(&format!(" type=\"{}\"", esc(k)));
    }
    let inner: String = if n.children.is_empty() { esc(&n.text) } else { n.children.iter().map(to_xml).collect() };
    format!("<{name}{attrs}>{inner}</{name}>", name = n.name)
}

fn is_disk(d: &Node) -> bool {
    d.xsi_type.as_deref() == Some("VirtualDisk")
}

fn is_nic(d: &Node) -> bool {
    d.child("macAddress").is_some()
        || d.xsi_type.as_deref().is_some_and(|t| {
            t.contains("Ethernet")
                || t.starts_with("VirtualVmxnet")
                || t.starts_with("VirtualE1000")
                || t == "VirtualPCNet32"
        })
}

fn num(d: &Node, field: &str) -> Option<u64> {
    d.text_at(&[field])?.trim().parse().ok()
}

fn set(d: &mut Node, field: &str, value: String) {
    match d.children.iter_mut().find(|c| c.name == field) {
        Some(c) => c.text = value,
        None => d.children.push(Node { name: field.into(), text: value, ..Node::default() }),
    }
}

/// A network for the first adapter: its reference, its name, and for a distributed port group the
/// switch's uuid and the group's key.
pub type Network = (MoRef, String, Option<(String, String)>);

/// What to change, in bytes and names.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Grow the first disk to this many bytes (never shrink).
    pub disk_size: Option<u64>,
    /// Add disks of these sizes (bytes) and provisioning (thin?).
    pub add_disks: Vec<(u64, bool)>,
    /// Put the first adapter on this network.
    pub network: Option<Network>,
}

/// The `deviceChange` entries for `changes`, given the VM's `config.hardware.device`.
pub fn device_changes(devices: &Node, changes: &Changes) -> Result<String, String> {
    let all: Vec<&Node> = devices.children.iter().collect();
    let disk = all.iter().copied().find(|d| is_disk(d));
    let mut out = String::new();
    if let Some(want) = changes.disk_size {
        let d = disk.ok_or("the VM has no disk to grow")?;
        let have = num(d, "capacityInKB").unwrap_or(0) * 1024;
        if want > have {
            let mut d = d.clone();
            set(&mut d, "capacityInKB", (want / 1024).to_string());
            if d.child("capacityInBytes").is_some() {
                set(&mut d, "capacityInBytes", want.to_string());
            }
            d.name = "device".into();
            out.push_str(&format!("<deviceChange><operation>edit</operation>{}</deviceChange>", to_xml(&d)));
        }
    }
    if !changes.add_disks.is_empty() {
        let controller =
            disk.and_then(|d| num(d, "controllerKey")).ok_or("the VM has no disk controller to add disks to")?;
        let mut used: Vec<u64> = all
            .iter()
            .filter(|d| num(d, "controllerKey") == Some(controller))
            .filter_map(|d| num(d, "unitNumber"))
            .collect();
        used.push(u64::from(CONTROLLER_UNIT));
        for (i, (bytes, thin)) in changes.add_disks.iter().enumerate() {
            let unit = (0..16u64).find(|u| !used.contains(u)).ok_or("no free unit on the disk controller")?;
            used.push(unit);
            out.push_str(&format!(
                "<deviceChange><operation>add</operation><fileOperation>create</fileOperation><device xsi:type=\"VirtualDisk\"><key>{key}</key><backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName></fileName><diskMode>persistent</diskMode><thinProvisioned>{thin}</thinProvisioned></backing><controllerKey>{controller}</controllerKey><unitNumber>{unit}</unitNumber><capacityInKB>{kb}</capacityInKB></device></deviceChange>",
                key = -(i as i64) - 100,
                kb = bytes / 1024,
            ));
        }
    }
    if let Some((net, name, dvs)) = &changes.network {
        let nic = all.iter().copied().find(|d| is_nic(d)).ok_or("the VM has no network adapter")?;
        let mut nic = nic.clone();
        let backing = match dvs {
            None => format!(
                "<backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>{}</deviceName>{}</backing>",
                esc(name),
                net.xml("network")
            ),
            Some((switch, group)) => format!(
                "<backing xsi:type=\"VirtualEthernetCardDistributedVirtualPortBackingInfo\"><port><switchUuid>{}</switchUuid><portgroupKey>{}</portgroupKey></port></backing>",
                esc(switch),
                esc(group)
            ),
        };
        let backing =
            Node::parse(&format!("<r xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">{backing}</r>"))?;
        match nic.children.iter().position(|c| c.name == "backing") {
            Some(i) => nic.children[i] = backing.children[0].clone(),
            None => return Err("the network adapter has no backing to change".into()),
        }
        nic.name = "device".into();
        out.push_str(&format!("<deviceChange><operation>edit</operation>{}</deviceChange>", to_xml(&nic)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICES: &str = r#"<val xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><VirtualDevice xsi:type="VirtualLsiLogicController"><key>1000</key><busNumber>0</busNumber></VirtualDevice><VirtualDevice xsi:type="VirtualDisk"><key>2000</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[LocalDS_0] vm/disk.vmdk</fileName><diskMode>persistent</diskMode></backing><controllerKey>1000</controllerKey><unitNumber>0</unitNumber><capacityInKB>1048576</capacityInKB><capacityInBytes>1073741824</capacityInBytes></VirtualDevice><VirtualDevice xsi:type="VirtualE1000"><key>4000</key><backing xsi:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>VM Network</deviceName></backing><macAddress>00:0c:29:00:00:01</macAddress></VirtualDevice></val>"#;

    #[test]
    fn grow_add_and_move_the_adapter() {
        let devices = Node::parse(DEVICES).unwrap();
        let changes = Changes {
            disk_size: Some(4 << 30),
            add_disks: vec![(1 << 30, true), (2 << 30, false)],
            network: Some((MoRef::new("Network", "network-7"), "Build".into(), None)),
        };
        let xml = device_changes(&devices, &changes).unwrap();
        assert!(xml.contains("<operation>edit</operation><device xsi:type=\"VirtualDisk\"><key>2000</key><backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>[LocalDS_0] vm/disk.vmdk</fileName>"), "{xml}");
        assert!(xml.contains("<capacityInKB>4194304</capacityInKB><capacityInBytes>4294967296</capacityInBytes>"));
        // Units 0 (the disk) and 7 (the controller) are taken.
        assert!(
            xml.contains("<key>-100</key>")
                && xml.contains("<unitNumber>1</unitNumber><capacityInKB>1048576</capacityInKB>")
        );
        assert!(xml.contains("<thinProvisioned>false</thinProvisioned></backing><controllerKey>1000</controllerKey><unitNumber>2</unitNumber>"));
        assert!(xml.contains("<deviceName>Build</deviceName><network type=\"Network\">network-7</network>"), "{xml}");
        assert!(xml.contains("<macAddress>00:0c:29:00:00:01</macAddress>"), "the adapter keeps its MAC");
        // Never shrink.
        let none = device_changes(&devices, &Changes { disk_size: Some(1 << 20), ..Changes::default() }).unwrap();
        assert_eq!(none, "");
    }
}
