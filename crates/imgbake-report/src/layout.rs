//! Where each image of the tree goes in the graph: a layered ("tidy tree") layout. Every image sits
//! one layer below its parent; leaves take the next free column from left to right in tree order,
//! and a parent is centred over its first and last child. Each image has one parent, so edges never
//! cross and no node overlaps another in its layer.

use std::collections::HashMap;

/// One image placed in the graph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placed {
    /// Index of the image in the list given to [`layout`].
    pub index: usize,
    /// Its layer: 0 for roots, its parent's + 1 otherwise.
    pub depth: usize,
    /// Left edge, in pixels.
    pub x: f64,
    /// Top edge, in pixels.
    pub y: f64,
}

/// The placed images and the size of the drawing.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// One per image, in the order given.
    pub nodes: Vec<Placed>,
    /// Width of the drawing, in pixels.
    pub width: f64,
    /// Height of the drawing, in pixels.
    pub height: f64,
    /// Node width, in pixels.
    pub node_width: f64,
    /// Node height, in pixels.
    pub node_height: f64,
}

/// Sizes of the drawing.
#[derive(Clone, Copy, Debug)]
pub struct Metrics {
    /// Node width.
    pub node_width: f64,
    /// Node height.
    pub node_height: f64,
    /// Space between nodes of one layer.
    pub gap_x: f64,
    /// Space between layers.
    pub gap_y: f64,
    /// Space around the drawing.
    pub margin: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { node_width: 180.0, node_height: 54.0, gap_x: 28.0, gap_y: 46.0, margin: 16.0 }
    }
}

/// Lays out images given as `(name, parent)` in tree order. An image whose parent is not in the
/// list is a root (a report of part of a tree still draws).
pub fn layout(images: &[(&str, Option<&str>)], m: Metrics) -> Layout {
    let index: HashMap<&str, usize> = images.iter().enumerate().map(|(i, (n, _))| (*n, i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); images.len()];
    let mut roots = Vec::new();
    for (i, (_, parent)) in images.iter().enumerate() {
        match parent.and_then(|p| index.get(p)) {
            Some(&p) if p != i => children[p].push(i),
            _ => roots.push(i),
        }
    }
    let mut column = vec![0.0f64; images.len()];
    let mut depth = vec![0usize; images.len()];
    let mut placed = vec![false; images.len()];
    let mut next = 0.0f64;
    for &r in &roots {
        place(r, 0, &children, &mut column, &mut depth, &mut placed, &mut next);
    }
    // A parent cycle (rejected by validation) would leave images unplaced: put them on top, in a row.
    for i in 0..images.len() {
        if !placed[i] {
            place(i, 0, &children, &mut column, &mut depth, &mut placed, &mut next);
        }
    }
    let columns = next.max(1.0);
    let layers = depth.iter().copied().max().map_or(1, |d| d + 1);
    let nodes = (0..images.len())
        .map(|i| Placed {
            index: i,
            depth: depth[i],
            x: m.margin + column[i] * (m.node_width + m.gap_x),
            y: m.margin + depth[i] as f64 * (m.node_height + m.gap_y),
        })
        .collect();
    Layout {
        nodes,
        width: 2.0 * m.margin + columns * m.node_width + (columns - 1.0) * m.gap_x,
        height: 2.0 * m.margin + layers as f64 * m.node_height + (layers as f64 - 1.0) * m.gap_y,
        node_width: m.node_width,
        node_height: m.node_height,
    }
}

/// Places `i` and its subtree; leaves take the next column, parents the middle of their children.
fn place(
    i: usize,
    d: usize,
    children: &[Vec<usize>],
    column: &mut [f64],
    depth: &mut [usize],
    placed: &mut [bool],
    next: &mut f64,
) {
    if placed[i] {
        return;
    }
    placed[i] = true;
    depth[i] = d;
    let kids: Vec<usize> = children[i].iter().copied().filter(|&c| !placed[c]).collect();
    if kids.is_empty() {
        column[i] = *next;
        *next += 1.0;
        return;
    }
    for &c in &kids {
        place(c, d + 1, children, column, depth, placed, next);
    }
    let (first, last) = (column[kids[0]], column[kids[kids.len() - 1]]);
    column[i] = (first + last) / 2.0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// base → runtime → (app, worker), base → tools; a second root `other`.
    fn three_levels() -> Layout {
        layout(
            &[
                ("base", None),
                ("runtime", Some("base")),
                ("app", Some("runtime")),
                ("tools", Some("base")),
                ("worker", Some("runtime")),
                ("other", None),
            ],
            Metrics::default(),
        )
    }

    #[test]
    fn every_image_is_one_layer_below_its_parent() {
        let l = three_levels();
        let depths: Vec<usize> = l.nodes.iter().map(|n| n.depth).collect();
        assert_eq!(depths, vec![0, 1, 2, 1, 2, 0]);
        let m = Metrics::default();
        for (child, parent) in [(1, 0), (2, 1), (3, 0), (4, 1)] {
            assert_eq!(l.nodes[child].y - l.nodes[parent].y, m.node_height + m.gap_y, "{child} under {parent}");
        }
    }

    #[test]
    fn a_parent_is_centred_over_its_children_and_leaves_keep_tree_order() {
        let l = three_levels();
        let x = |i: usize| l.nodes[i].x;
        // Leaves from left to right: app, worker (runtime's), tools, then the second root.
        assert!(x(2) < x(4) && x(4) < x(3) && x(3) < x(5), "{:?}", l.nodes);
        assert_eq!(x(1), (x(2) + x(4)) / 2.0, "runtime centred over app and worker");
        assert_eq!(x(0), (x(1) + x(3)) / 2.0, "base centred over runtime and tools");
    }

    #[test]
    fn nodes_of_a_layer_do_not_overlap_and_all_fit_the_drawing() {
        let l = three_levels();
        for a in &l.nodes {
            assert!(a.x >= 0.0 && a.y >= 0.0);
            assert!(a.x + l.node_width <= l.width && a.y + l.node_height <= l.height, "{a:?} in {l:?}");
            for b in l.nodes.iter().filter(|b| b.index != a.index && b.depth == a.depth) {
                assert!((a.x - b.x).abs() >= l.node_width, "{a:?} overlaps {b:?}");
            }
        }
        assert_eq!(l.height, 2.0 * 16.0 + 3.0 * 54.0 + 2.0 * 46.0, "three layers");
    }

    #[test]
    fn an_unknown_parent_makes_a_root_and_a_cycle_still_places_everything() {
        let l = layout(&[("a", Some("missing")), ("b", Some("c")), ("c", Some("b"))], Metrics::default());
        assert_eq!(l.nodes[0].depth, 0);
        assert_eq!(l.nodes.len(), 3);
        let mut xs: Vec<(usize, i64)> = l.nodes.iter().map(|n| (n.depth, n.x as i64)).collect();
        xs.sort();
        xs.dedup();
        assert_eq!(xs.len(), 3, "no two images at one place: {:?}", l.nodes);
    }
}
