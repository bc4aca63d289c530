//! OVF 1.0 descriptors: the one we write (for VirtualBox, also read by VMware), and a reader for
//! ours and for VirtualBox and VMware exports.
//!
//! The writer emits a plain OVF 1.0 envelope in the shape VirtualBox's own exports have:
//! `References` (`File ovf:href ovf:size`), `DiskSection` (capacity in bytes, streamOptimized
//! format), a `NetworkSection` with `NAT`, and one `VirtualSystem` with an `OperatingSystemSection`
//! (CIM id plus the optional `vbox:OSType`) and a `VirtualHardwareSection` (`virtualbox-2.2`
//! system; CPU, memory, a SATA AHCI or IDE PIIX4 controller, the disks on it, an E1000 NIC on NAT).
//! No `vbox:Machine` section: VirtualBox fills its defaults for the rest on import.

use std::fmt::Write as _;
use std::path::Path;

use quick_xml::events::{BytesStart, Event};

use super::error::FormatError;
use super::vmdk::STREAM_OPTIMIZED_FORMAT;

/// The virtual machine an OVF describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hardware {
    /// The machine's name (the VirtualSystem's id; VirtualBox names the imported VM after it).
    pub name: String,
    /// VirtualBox OS type id, e.g. `Debian_64`, `Ubuntu_64`, `RedHat_64`, `Other_64`.
    pub os_type: String,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub cpus: u32,
    /// The controller the disks hang on.
    pub disk_controller: DiskController,
}

impl Hardware {
    /// A machine with its disks on a SATA (AHCI) controller, VirtualBox's default for new VMs.
    pub fn new(name: impl Into<String>, os_type: impl Into<String>, memory_mib: u64, cpus: u32) -> Hardware {
        Hardware { name: name.into(), os_type: os_type.into(), memory_mib, cpus, disk_controller: DiskController::Sata }
    }
}

/// The disk controller of a written OVF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskController {
    /// SATA, AHCI (ResourceType 20); up to 30 disks.
    #[default]
    Sata,
    /// IDE, PIIX4 (ResourceType 5); up to 2 disks (master and slave of the primary channel).
    Ide,
}

/// A disk to write into an OVF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvfDisk {
    /// The file name in the package (`box-disk001.vmdk`).
    pub file_name: String,
    /// The file's size, bytes.
    pub file_size: u64,
    /// The disk's virtual size, bytes.
    pub capacity: u64,
    /// Bytes of guest data, when known.
    pub populated_size: Option<u64>,
}

/// A `References/File`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`: the file's name in the package.
    pub href: String,
    /// `ovf:size`, bytes, when given.
    pub size: Option<u64>,
}

/// A `DiskSection/Disk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// `ovf:diskId`.
    pub id: String,
    /// The virtual size in bytes (`ovf:capacity` times `ovf:capacityAllocationUnits`).
    pub capacity: u64,
    /// `ovf:populatedSize`, bytes, when given.
    pub populated_size: Option<u64>,
    /// `ovf:fileRef`, if the disk has a file (an empty disk has none).
    pub file_ref: Option<String>,
    /// The referenced file's `href`.
    pub file: Option<String>,
    /// `ovf:format`, e.g. the streamOptimized VMDK URL.
    pub format: Option<String>,
}

/// What we read from an OVF descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ovf {
    /// The VirtualSystem's `ovf:id` (or its `Name`).
    pub name: String,
    /// VirtualBox OS type (`vbox:OSType`), when present.
    pub os_type: Option<String>,
    /// The CIM OS id (`OperatingSystemSection ovf:id`).
    pub cim_os_id: Option<u32>,
    /// VMware's `vmw:osType`, when present.
    pub vmware_os_type: Option<String>,
    /// The OperatingSystemSection's `Description`.
    pub os_description: Option<String>,
    /// Memory, MiB.
    pub memory_mib: Option<u64>,
    /// Virtual CPUs.
    pub cpus: Option<u32>,
    /// `vssd:VirtualSystemType` (`virtualbox-2.2`, `vmx-13`...).
    pub system_type: Option<String>,
    /// The files the package holds.
    pub files: Vec<FileRef>,
    /// The disks, in DiskSection order.
    pub disks: Vec<DiskInfo>,
    /// The networks' names.
    pub networks: Vec<String>,
}

impl Ovf {
    /// The machine as [`Hardware`]: the OS type from `vbox:OSType`, else from the CIM id, else
    /// `Other_64`; 1024 MiB and 1 CPU when the descriptor does not say; a SATA controller.
    pub fn hardware(&self) -> Hardware {
        let os_type = self
            .os_type
            .clone()
            .or_else(|| self.cim_os_id.and_then(vbox_os_type).map(str::to_string))
            .unwrap_or_else(|| "Other_64".to_string());
        Hardware::new(self.name.clone(), os_type, self.memory_mib.unwrap_or(1024), self.cpus.unwrap_or(1))
    }
}

/// CIM operating system ids (DMTF CIM_OperatingSystem.OSType) of VirtualBox OS types, both ways.
const CIM_OS_IDS: &[(&str, u32)] = &[
    ("Other", 1),
    ("Linux", 36),
    ("FreeBSD", 42),
    ("FreeBSD_64", 78),
    ("RedHat", 79),
    ("RedHat_64", 80),
    ("OpenSUSE", 82),
    ("OpenSUSE_64", 83),
    ("Ubuntu", 93),
    ("Ubuntu_64", 94),
    ("Debian", 95),
    ("Debian_64", 96),
    ("Linux24", 97),
    ("Linux24_64", 98),
    ("Linux26", 99),
    ("Linux26_64", 100),
    ("Linux_64", 101),
    ("Other_64", 102),
    ("Oracle", 108),
    ("Oracle_64", 109),
];

/// The CIM OS id for a VirtualBox OS type: the table's, else Linux / Other by the `_64` suffix.
pub fn cim_os_id(vbox_os_type: &str) -> u32 {
    if let Some((_, id)) = CIM_OS_IDS.iter().find(|(t, _)| t.eq_ignore_ascii_case(vbox_os_type)) {
        return *id;
    }
    match (
        vbox_os_type.ends_with("_64"),
        ["Fedora", "ArchLinux", "Gentoo", "Mandriva", "Turbolinux", "Linux"]
            .iter()
            .any(|l| vbox_os_type.starts_with(l)),
    ) {
        (true, true) => 101,
        (false, true) => 36,
        (true, false) => 102,
        (false, false) => 1,
    }
}

fn vbox_os_type(cim: u32) -> Option<&'static str> {
    CIM_OS_IDS.iter().find(|(_, id)| *id == cim).map(|(t, _)| *t)
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The OVF 1.0 descriptor of `hw` with `disks` (the first is the boot disk). The files are
/// `file1..`, the disks `vmdisk1..`, all streamOptimized VMDKs.
pub fn write_ovf(hw: &Hardware, disks: &[OvfDisk]) -> Result<String, FormatError> {
    if disks.is_empty() {
        return Err(FormatError::Invalid(format!("the OVF of {} needs at least one disk", hw.name)));
    }
    let max = match hw.disk_controller {
        DiskController::Sata => 30,
        DiskController::Ide => 2,
    };
    if disks.len() > max {
        return Err(FormatError::Invalid(format!(
            "{} disks do not fit on one {:?} controller (at most {max})",
            disks.len(),
            hw.disk_controller
        )));
    }
    if hw.cpus == 0 || hw.memory_mib == 0 {
        return Err(FormatError::Invalid(format!("{}: cpus and memory must be at least 1", hw.name)));
    }
    if hw.name.trim().is_empty() {
        return Err(FormatError::Invalid("the machine needs a name".into()));
    }
    let name = esc(&hw.name);
    let os_type = esc(&hw.os_type);
    let mut x = String::new();
    // Writing to a String cannot fail: the `let _ =` below drop an always-Ok result.
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(concat!(
        "<Envelope ovf:version=\"1.0\" xml:lang=\"en-US\"",
        " xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"",
        " xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\"",
        " xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\"",
        " xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\"",
        " xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"",
        " xmlns:vbox=\"http://www.virtualbox.org/ovf/machine\">\n"
    ));
    x.push_str("  <References>\n");
    for (i, d) in disks.iter().enumerate() {
        let _ = writeln!(
            x,
            "    <File ovf:id=\"file{}\" ovf:href=\"{}\" ovf:size=\"{}\"/>",
            i + 1,
            esc(&d.file_name),
            d.file_size
        );
    }
    x.push_str("  </References>\n");
    x.push_str("  <DiskSection>\n    <Info>List of the virtual disks used in the package</Info>\n");
    for (i, d) in disks.iter().enumerate() {
        let populated = d.populated_size.map(|p| format!(" ovf:populatedSize=\"{p}\"")).unwrap_or_default();
        let _ = writeln!(
            x,
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" ovf:format=\"{STREAM_OPTIMIZED_FORMAT}\"{populated}/>",
            d.capacity,
            n = i + 1
        );
    }
    x.push_str("  </DiskSection>\n");
    x.push_str(concat!(
        "  <NetworkSection>\n",
        "    <Info>Logical networks used in the package</Info>\n",
        "    <Network ovf:name=\"NAT\">\n",
        "      <Description>Logical network used by this appliance.</Description>\n",
        "    </Network>\n",
        "  </NetworkSection>\n"
    ));
    let _ = writeln!(x, "  <VirtualSystem ovf:id=\"{name}\">");
    x.push_str("    <Info>A virtual machine</Info>\n");
    let _ = writeln!(x, "    <Name>{name}</Name>");
    let _ = write!(
        x,
        concat!(
            "    <OperatingSystemSection ovf:id=\"{cim}\">\n",
            "      <Info>The kind of installed guest operating system</Info>\n",
            "      <Description>{os}</Description>\n",
            "      <vbox:OSType ovf:required=\"false\">{os}</vbox:OSType>\n",
            "    </OperatingSystemSection>\n"
        ),
        cim = cim_os_id(&hw.os_type),
        os = os_type
    );
    x.push_str(
        "    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements for a virtual machine</Info>\n",
    );
    let _ = write!(
        x,
        concat!(
            "      <System>\n",
            "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n",
            "        <vssd:InstanceID>0</vssd:InstanceID>\n",
            "        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n",
            "        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>\n",
            "      </System>\n"
        ),
        name = name
    );
    // rasd elements in the schema's (alphabetical) order.
    let cpus = format!("{} virtual CPU{}", hw.cpus, if hw.cpus == 1 { "" } else { "s" });
    item(
        &mut x,
        &[
            ("Caption", &cpus),
            ("Description", "Number of virtual CPUs"),
            ("ElementName", &cpus),
            ("InstanceID", "1"),
            ("ResourceType", "3"),
            ("VirtualQuantity", &hw.cpus.to_string()),
        ],
    );
    let memory = format!("{} MB of memory", hw.memory_mib);
    item(
        &mut x,
        &[
            ("AllocationUnits", "MegaBytes"),
            ("Caption", &memory),
            ("Description", "Memory Size"),
            ("ElementName", &memory),
            ("InstanceID", "2"),
            ("ResourceType", "4"),
            ("VirtualQuantity", &hw.memory_mib.to_string()),
        ],
    );
    let (controller, description, subtype, resource_type) = match hw.disk_controller {
        DiskController::Sata => ("sataController0", "SATA Controller", "AHCI", "20"),
        DiskController::Ide => ("ideController0", "IDE Controller", "PIIX4", "5"),
    };
    item(
        &mut x,
        &[
            ("Address", "0"),
            ("Caption", controller),
            ("Description", description),
            ("ElementName", controller),
            ("InstanceID", "3"),
            ("ResourceSubType", subtype),
            ("ResourceType", resource_type),
        ],
    );
    item(
        &mut x,
        &[
            ("AutomaticAllocation", "true"),
            ("Caption", "Ethernet adapter on 'NAT'"),
            ("Connection", "NAT"),
            ("ElementName", "Ethernet adapter on 'NAT'"),
            ("InstanceID", "4"),
            ("ResourceSubType", "E1000"),
            ("ResourceType", "10"),
        ],
    );
    for i in 0..disks.len() {
        let disk = format!("disk{}", i + 1);
        item(
            &mut x,
            &[
                ("AddressOnParent", &i.to_string()),
                ("Caption", &disk),
                ("Description", "Disk Image"),
                ("ElementName", &disk),
                ("HostResource", &format!("/disk/vmdisk{}", i + 1)),
                ("InstanceID", &(5 + i).to_string()),
                ("Parent", "3"),
                ("ResourceType", "17"),
            ],
        );
    }
    x.push_str("    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n");
    Ok(x)
}

fn item(x: &mut String, fields: &[(&str, &str)]) {
    x.push_str("      <Item>\n");
    for (k, v) in fields {
        let _ = writeln!(x, "        <rasd:{k}>{}</rasd:{k}>", esc(v));
    }
    x.push_str("      </Item>\n");
}

/// A tiny DOM: local names only (prefixes vary between exporters: `ovf:Disk`, `Disk`...).
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, local: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == local).map(|(_, v)| v.as_str())
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    fn descendants<'a>(&'a self, name: &str, out: &mut Vec<&'a Node>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            } else {
                c.descendants(name, out);
            }
        }
    }
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or_default().to_string()
}

fn node_of(e: &BytesStart<'_>) -> Result<Node, String> {
    let mut n = Node { name: local(e.name().as_ref()), ..Node::default() };
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|e| e.to_string())?.into_owned();
        n.attrs.push((local(a.key.as_ref()), value));
    }
    Ok(n)
}

fn parse_xml(xml: &str) -> Result<Node, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Node> = Vec::new();
    loop {
        match reader.read_event().map_err(|e| format!("XML error at byte {}: {e}", reader.buffer_position()))? {
            Event::Start(e) => stack.push(node_of(&e)?),
            Event::Empty(e) => {
                let n = node_of(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(n),
                    None => return Ok(n),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let text = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => match r.xml10_content().as_ref() {
                            "lt" => "<".into(),
                            "gt" => ">".into(),
                            "amp" => "&".into(),
                            "quot" => "\"".into(),
                            "apos" => "'".into(),
                            other => return Err(format!("unknown entity &{other};")),
                        },
                    };
                    top.text.push_str(&text);
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(c.as_ref());
                }
            }
            Event::End(_) => {
                let done = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Eof => return Err("the document ended before its root element closed".into()),
            _ => {}
        }
    }
}

/// Bytes per unit of a DMTF programmatic unit (`byte`, `byte * 2^30`, `byte * 1024`) or of the
/// names exporters write instead (`MegaBytes`, `MB`, `GiB`...). `None` when unknown.
pub fn unit_bytes(unit: &str) -> Option<u64> {
    let u: String = unit.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    match u.as_str() {
        "byte" | "bytes" | "b" => return Some(1),
        "kilobyte" | "kilobytes" | "kb" | "kib" => return Some(1 << 10),
        "megabyte" | "megabytes" | "mb" | "mib" => return Some(1 << 20),
        "gigabyte" | "gigabytes" | "gb" | "gib" => return Some(1 << 30),
        "terabyte" | "terabytes" | "tb" | "tib" => return Some(1 << 40),
        _ => {}
    }
    let rest = u.strip_prefix("byte")?;
    let mut total: u64 = 1;
    for term in rest.split('*').skip(1) {
        let factor = match term.split_once('^') {
            Some((base, exp)) => base.parse::<u64>().ok()?.checked_pow(exp.parse::<u32>().ok()?)?,
            None => term.parse::<u64>().ok()?,
        };
        total = total.checked_mul(factor)?;
    }
    if !rest.is_empty() && !rest.starts_with('*') {
        return None;
    }
    Some(total)
}

fn number(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// Parse an OVF descriptor; `path` names it in errors.
pub fn parse_ovf(xml: &str, path: &Path) -> Result<Ovf, FormatError> {
    let err = |d: String| FormatError::ovf(path, d);
    let xml = xml.trim_start_matches('\u{feff}');
    let root = parse_xml(xml).map_err(|e| err(format!("not a readable OVF descriptor: {e}")))?;
    if root.name != "Envelope" {
        return Err(err(format!("not an OVF descriptor: the root element is <{}>, not <Envelope>", root.name)));
    }

    let mut files = Vec::new();
    if let Some(refs) = root.child("References") {
        for f in refs.children("File") {
            let href = f.attr("href").ok_or_else(|| err("a References/File has no ovf:href".into()))?;
            let id = f.attr("id").unwrap_or(href).to_string();
            if f.attr("compression").is_some_and(|c| !c.is_empty() && c != "identity") {
                return Err(err(format!(
                    "file {href} is stored with ovf:compression=\"{}\", which imgbake does not read",
                    f.attr("compression").unwrap_or_default()
                )));
            }
            if f.attr("chunkSize").is_some() {
                return Err(err(format!(
                    "file {href} is split into chunks (ovf:chunkSize), which imgbake does not read"
                )));
            }
            let size = match f.attr("size") {
                Some(s) => Some(number(s).ok_or_else(|| err(format!("file {href}: ovf:size `{s}` is not a number")))?),
                None => None,
            };
            files.push(FileRef { id, href: href.to_string(), size });
        }
    }

    let mut disks = Vec::new();
    let mut disk_sections = Vec::new();
    root.descendants("DiskSection", &mut disk_sections);
    for section in disk_sections {
        for d in section.children("Disk") {
            let id = d.attr("diskId").ok_or_else(|| err("a DiskSection/Disk has no ovf:diskId".into()))?.to_string();
            let raw = d.attr("capacity").ok_or_else(|| err(format!("disk {id} has no ovf:capacity")))?;
            let count = number(raw).ok_or_else(|| {
                err(format!("disk {id}: ovf:capacity `{raw}` is not a number (property references are not supported)"))
            })?;
            let units = d.attr("capacityAllocationUnits").unwrap_or("byte");
            let per = unit_bytes(units)
                .ok_or_else(|| err(format!("disk {id}: unknown ovf:capacityAllocationUnits `{units}`")))?;
            let capacity =
                count.checked_mul(per).ok_or_else(|| err(format!("disk {id}: capacity {raw} {units} is too large")))?;
            let populated_size = d.attr("populatedSize").and_then(number);
            let file_ref = d.attr("fileRef").filter(|r| !r.is_empty()).map(str::to_string);
            let file =
                match &file_ref {
                    Some(r) => Some(files.iter().find(|f| &f.id == r).map(|f| f.href.clone()).ok_or_else(|| {
                        err(format!("disk {id} refers to file `{r}`, which References does not list"))
                    })?),
                    None => None,
                };
            disks.push(DiskInfo {
                id,
                capacity,
                populated_size,
                file_ref,
                file,
                format: d.attr("format").map(str::to_string),
            });
        }
    }

    let mut networks = Vec::new();
    let mut network_sections = Vec::new();
    root.descendants("NetworkSection", &mut network_sections);
    for section in network_sections {
        networks.extend(section.children("Network").filter_map(|n| n.attr("name")).map(str::to_string));
    }

    let mut systems = Vec::new();
    root.descendants("VirtualSystem", &mut systems);
    let system = match systems.as_slice() {
        [] => return Err(err("the descriptor has no VirtualSystem".into())),
        [one] => *one,
        many => {
            return Err(err(format!(
                "the descriptor holds {} virtual machines (a VirtualSystemCollection); imgbake reads one",
                many.len()
            )));
        }
    };
    let name =
        system.attr("id").or_else(|| system.child_text("Name")).filter(|n| !n.is_empty()).unwrap_or("vm").to_string();

    let os = system.child("OperatingSystemSection");
    let os_type = os.and_then(|o| o.child_text("OSType")).filter(|t| !t.is_empty()).map(str::to_string);
    let cim_os_id = os.and_then(|o| o.attr("id")).and_then(|i| i.trim().parse().ok());
    let vmware_os_type = os.and_then(|o| o.attr("osType")).map(str::to_string);
    let os_description = os.and_then(|o| o.child_text("Description")).map(str::to_string);

    let mut memory_mib = None;
    let mut cpus = None;
    let mut system_type = None;
    if let Some(hw) = system.child("VirtualHardwareSection") {
        system_type = hw.child("System").and_then(|s| s.child_text("VirtualSystemType")).map(str::to_string);
        for it in hw.children.iter().filter(|c| c.name.ends_with("Item")) {
            let kind = it.child_text("ResourceType").and_then(number);
            let quantity = it.child_text("VirtualQuantity");
            match (kind, quantity) {
                (Some(3), Some(q)) => {
                    cpus = Some(
                        q.parse::<u32>()
                            .map_err(|_| err(format!("the CPU item's VirtualQuantity `{q}` is not a number")))?,
                    );
                }
                (Some(4), Some(q)) => {
                    let count = number(q)
                        .ok_or_else(|| err(format!("the memory item's VirtualQuantity `{q}` is not a number")))?;
                    let units = it.child_text("AllocationUnits").unwrap_or("byte * 2^20");
                    let per = unit_bytes(units)
                        .ok_or_else(|| err(format!("the memory item has unknown AllocationUnits `{units}`")))?;
                    let bytes =
                        count.checked_mul(per).ok_or_else(|| err(format!("memory {q} {units} is too large")))?;
                    memory_mib = Some(bytes.div_ceil(1 << 20));
                }
                _ => {}
            }
        }
    }

    Ok(Ovf {
        name,
        os_type,
        cim_os_id,
        vmware_os_type,
        os_description,
        memory_mib,
        cpus,
        system_type,
        files,
        disks,
        networks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(unit_bytes("byte"), Some(1));
        assert_eq!(unit_bytes("byte * 2^30"), Some(1 << 30));
        assert_eq!(unit_bytes("byte*2^20"), Some(1 << 20));
        assert_eq!(unit_bytes("byte * 1024"), Some(1024));
        assert_eq!(unit_bytes("MegaBytes"), Some(1 << 20));
        assert_eq!(unit_bytes("GB"), Some(1 << 30));
        assert_eq!(unit_bytes("bytes * 2^"), None);
        assert_eq!(unit_bytes("furlongs"), None);
        assert_eq!(unit_bytes("byte * 2^99"), None);
    }

    #[test]
    fn round_trip() {
        let mut hw = Hardware::new("web & db", "Debian_64", 2048, 2);
        hw.disk_controller = DiskController::Ide;
        let disks = [OvfDisk {
            file_name: "a-disk001.vmdk".into(),
            file_size: 1234,
            capacity: 64 << 20,
            populated_size: Some(65536),
        }];
        let xml = write_ovf(&hw, &disks).expect("writes");
        let ovf = parse_ovf(&xml, Path::new("a.ovf")).expect("parses");
        assert_eq!(ovf.name, "web & db");
        assert_eq!(ovf.os_type.as_deref(), Some("Debian_64"));
        assert_eq!(ovf.cim_os_id, Some(96));
        assert_eq!(ovf.memory_mib, Some(2048));
        assert_eq!(ovf.cpus, Some(2));
        assert_eq!(ovf.system_type.as_deref(), Some("virtualbox-2.2"));
        assert_eq!(ovf.files, vec![FileRef { id: "file1".into(), href: "a-disk001.vmdk".into(), size: Some(1234) }]);
        assert_eq!(ovf.disks[0].capacity, 64 << 20);
        assert_eq!(ovf.disks[0].populated_size, Some(65536));
        assert_eq!(ovf.disks[0].file.as_deref(), Some("a-disk001.vmdk"));
        assert_eq!(ovf.disks[0].format.as_deref(), Some(STREAM_OPTIMIZED_FORMAT));
        assert_eq!(ovf.networks, vec!["NAT".to_string()]);
        assert_eq!(ovf.hardware(), hw_with_sata(hw));
    }

    fn hw_with_sata(mut hw: Hardware) -> Hardware {
        hw.disk_controller = DiskController::Sata;
        hw
    }

    #[test]
    fn too_many_ide_disks() {
        let mut hw = Hardware::new("x", "Other_64", 512, 1);
        hw.disk_controller = DiskController::Ide;
        let d = OvfDisk { file_name: "d.vmdk".into(), file_size: 1, capacity: 1, populated_size: None };
        assert!(write_ovf(&hw, &[d.clone(), d.clone(), d]).is_err());
        assert!(write_ovf(&hw, &[]).is_err());
    }

    #[test]
    fn dangling_file_ref() {
        let xml = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
            <References/><DiskSection><Disk ovf:diskId="vmdisk1" ovf:capacity="1" ovf:fileRef="file9"/></DiskSection>
            <VirtualSystem ovf:id="x"/></Envelope>"#;
        let e = parse_ovf(xml, Path::new("box.ovf")).expect_err("dangling");
        assert_eq!(e.to_string(), "box.ovf: disk vmdisk1 refers to file `file9`, which References does not list");
    }

    #[test]
    fn not_an_ovf() {
        let e = parse_ovf("<html><body/></html>", Path::new("x.ovf")).expect_err("html");
        assert!(e.to_string().contains("root element is <html>"), "{e}");
        assert!(parse_ovf("not xml at all <", Path::new("x.ovf")).is_err());
    }
}
