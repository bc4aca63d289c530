//! Rewriting states inside moto's XML answers.
//!
//! An EC2 answer lists resources as `<item>`s of a set (`instancesSet`, `imagesSet`); each item has
//! its id and its state as direct children. [`rewrite_states`] streams the document, buffers one
//! item of the set at a time, asks the caller what the item's state should be, and writes it back
//! with that state. Everything else passes through untouched.

use quick_xml::events::{BytesText, Event};
use quick_xml::{Reader, Writer};

/// Where the id and the state are inside an item.
#[derive(Clone, Copy, Debug)]
pub struct ItemShape {
    /// The set whose items are resources (`instancesSet`, `imagesSet`).
    pub set: &'static str,
    /// The id element (`instanceId`, `imageId`).
    pub id: &'static str,
    /// The state element (`instanceState`, `currentState`, `imageState`).
    pub state: &'static str,
    /// The state is `<code>N</code><name>S</name>` inside the state element (instances), rather than
    /// the element's own text (images).
    pub coded: bool,
}

/// A state to show instead of the real one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    /// Instance state code (16 running, 0 pending...), for coded states.
    pub code: Option<u16>,
    /// The state name.
    pub name: String,
}

impl Shown {
    /// Leave the item out of the answer (not listed yet).
    pub fn hidden() -> Self {
        Shown { code: None, name: HIDDEN.into() }
    }
}

const HIDDEN: &str = "\u{0}hidden";

/// Why an answer could not be rewritten.
#[derive(Debug, thiserror::Error)]
#[error("cannot rewrite the XML answer: {0}")]
pub struct RewriteError(String);

/// Rewrite the state of every item of `shape.set` for which `decide(id, real_state)` returns a state.
pub fn rewrite_states(
    xml: &str,
    shape: ItemShape,
    mut decide: impl FnMut(&str, &str) -> Option<Shown>,
) -> Result<String, RewriteError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(false);
    let mut writer = Writer::new(Vec::with_capacity(xml.len() + 64));
    let mut path: Vec<String> = Vec::new();
    let mut item: Option<Vec<Event<'static>>> = None;
    let mut depth_in_item = 0usize;
    let err = |e: &dyn std::fmt::Display| RewriteError(e.to_string());
    loop {
        let ev = reader.read_event().map_err(|e| err(&e))?;
        if matches!(ev, Event::Eof) {
            break;
        }
        if let Some(buf) = item.as_mut() {
            match &ev {
                Event::Start(_) => depth_in_item += 1,
                Event::End(_) => {
                    if depth_in_item == 0 {
                        buf.push(ev.into_owned());
                        let done = item.take().unwrap_or_default();
                        for e in rewrite_item(done, shape, &mut decide) {
                            writer.write_event(e).map_err(|e| err(&e))?;
                        }
                        path.pop();
                        continue;
                    }
                    depth_in_item -= 1;
                }
                _ => {}
            }
            buf.push(ev.into_owned());
            continue;
        }
        match &ev {
            Event::Start(s) => {
                let name = s.local_name().as_ref().to_string();
                if name == "item" && path.last().is_some_and(|p| p == shape.set) {
                    item = Some(vec![ev.clone().into_owned()]);
                    depth_in_item = 0;
                    path.push(name);
                    continue;
                }
                path.push(name);
            }
            Event::End(_) => {
                path.pop();
            }
            _ => {}
        }
        writer.write_event(ev).map_err(|e| err(&e))?;
    }
    String::from_utf8(writer.into_inner()).map_err(|e| err(&e))
}

/// `events` is one item, its own Start first and End last.
fn rewrite_item(
    events: Vec<Event<'static>>,
    shape: ItemShape,
    decide: &mut impl FnMut(&str, &str) -> Option<Shown>,
) -> Vec<Event<'static>> {
    // Pass 1: the id and the real state, from direct children.
    let mut id = None;
    let mut state = None;
    walk(&events, shape, |role, text| match role {
        Role::Id => id = Some(text.to_string()),
        Role::StateName => state = Some(text.to_string()),
        Role::StateCode => {}
    });
    let (Some(id), Some(state)) = (id, state) else { return events };
    let Some(shown) = decide(&id, &state) else { return events };
    if shown.name == HIDDEN {
        return Vec::new();
    }
    // Pass 2: replace the texts.
    let mut replace: Vec<(usize, String)> = Vec::new();
    walk_positions(&events, shape, |role, index| match role {
        Role::StateName => replace.push((index, shown.name.clone())),
        Role::StateCode => {
            if let Some(c) = shown.code {
                replace.push((index, c.to_string()));
            }
        }
        Role::Id => {}
    });
    let mut out = events;
    for (i, text) in replace {
        out[i] = Event::Text(BytesText::new(&text).into_owned());
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Id,
    StateName,
    StateCode,
}

fn walk(events: &[Event<'static>], shape: ItemShape, mut f: impl FnMut(Role, &str)) {
    walk_positions(events, shape, |role, i| {
        if let Event::Text(t) = &events[i] {
            let text: &str = t;
            f(role, text.trim());
        }
    });
}

/// Calls `f` with the index of each Text event that holds the id, the state name or the state code.
fn walk_positions(events: &[Event<'static>], shape: ItemShape, mut f: impl FnMut(Role, usize)) {
    // Element names from the item down to the current element.
    let mut path: Vec<String> = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        match ev {
            Event::Start(s) => path.push(s.local_name().as_ref().to_string()),
            Event::End(_) => {
                path.pop();
            }
            Event::Text(_) => {
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                // names[0] is the item itself.
                match names.as_slice() {
                    [_, id] if *id == shape.id => f(Role::Id, i),
                    [_, st] if !shape.coded && *st == shape.state => f(Role::StateName, i),
                    [_, st, "name"] if shape.coded && *st == shape.state => f(Role::StateName, i),
                    [_, st, "code"] if shape.coded && *st == shape.state => f(Role::StateCode, i),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// The shapes of the answers the proxy rewrites.
pub mod shapes {
    use super::ItemShape;

    /// DescribeInstances (`reservationSet/item/instancesSet/item`) and RunInstances.
    pub const INSTANCES: ItemShape =
        ItemShape { set: "instancesSet", id: "instanceId", state: "instanceState", coded: true };
    /// StopInstances, TerminateInstances, StartInstances.
    pub const STATE_CHANGES: ItemShape =
        ItemShape { set: "instancesSet", id: "instanceId", state: "currentState", coded: true };
    /// DescribeInstanceStatus.
    pub const INSTANCE_STATUS: ItemShape =
        ItemShape { set: "instanceStatusSet", id: "instanceId", state: "instanceState", coded: true };
    /// DescribeImages.
    pub const IMAGES: ItemShape = ItemShape { set: "imagesSet", id: "imageId", state: "imageState", coded: false };
    /// DescribeSnapshots.
    pub const SNAPSHOTS: ItemShape = ItemShape { set: "snapshotSet", id: "snapshotId", state: "status", coded: false };
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><reservationSet><item><reservationId>r-1</reservationId><instancesSet><item><blockDeviceMapping><item><deviceName>/dev/sda1</deviceName></item></blockDeviceMapping><instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState><tagSet><item><key>a&amp;b</key><value>x</value></item></tagSet></item><item><instanceId>i-2</instanceId><instanceState><code>16</code><name>running</name></instanceState></item></instancesSet></item></reservationSet></DescribeInstancesResponse>"#;

    #[test]
    fn rewrites_only_the_chosen_item() {
        let mut seen = Vec::new();
        let out = rewrite_states(DESCRIBE, shapes::INSTANCES, |id, state| {
            seen.push((id.to_string(), state.to_string()));
            (id == "i-2").then(|| Shown { code: Some(0), name: "pending".into() })
        })
        .unwrap();
        assert_eq!(seen, vec![("i-1".to_string(), "running".to_string()), ("i-2".to_string(), "running".to_string())]);
        assert!(
            out.contains("<instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name>"),
            "{out}"
        );
        assert!(out.contains("<instanceId>i-2</instanceId><instanceState><code>0</code><name>pending</name>"), "{out}");
        // Untouched parts survive byte for byte (entities included).
        assert!(out.contains("<key>a&amp;b</key>"), "{out}");
        assert!(out.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"));
        assert_eq!(out.len(), DESCRIBE.len() - 1, "16 → 0 is one character shorter, running → pending the same");
    }

    #[test]
    fn image_state_is_plain_text() {
        let xml = "<R><imagesSet><item><imageId>ami-1</imageId><imageState>available</imageState><blockDeviceMapping><item><ebs><snapshotId>snap-1</snapshotId></ebs></item></blockDeviceMapping></item></imagesSet></R>";
        let out = rewrite_states(xml, shapes::IMAGES, |_, s| {
            assert_eq!(s, "available");
            Some(Shown { code: None, name: "pending".into() })
        })
        .unwrap();
        assert_eq!(out, xml.replace(">available<", ">pending<"));
    }
}
