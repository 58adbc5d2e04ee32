//! Zone geometry. Zones are polygons drawn by operators over a camera's picture, in
//! normalised image coordinates (x right, y down, both 0..1 from the top-left corner), so
//! one zone file keeps working when a camera's stream resolution changes.

use thiserror::Error;

/// Distance below which a point counts as lying on a polygon's edge. Far below any real
/// detail (a 4K frame's pixel is ~2.6e-4), but above the rounding of a few operations.
const ON_EDGE_EPSILON: f64 = 1e-9;

/// Why a list of vertices is not a usable zone. Vertices count from 1, as an operator
/// counts them in a camera file.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GeometryError {
    #[error("a polygon needs at least 3 vertices, got {0}")]
    TooFewVertices(usize),
    #[error("vertex {index} ({x}, {y}) is not a finite number")]
    NotFinite { index: usize, x: f64, y: f64 },
    #[error("vertex {index} ({x}, {y}) is outside 0..1")]
    OutOfRange { index: usize, x: f64, y: f64 },
    #[error("polygon has zero area (its vertices are collinear or repeated)")]
    ZeroArea,
    #[error("a polygon may have at most {MAX_VERTICES} vertices, got {0}")]
    TooManyVertices(usize),
    #[error("vertex {index} ({x}, {y}) repeats vertex {first}")]
    RepeatedVertex {
        index: usize,
        first: usize,
        x: f64,
        y: f64,
    },
    /// Two edges of the outline meet, each named by the vertices it joins (from 1; the last
    /// edge joins the last vertex to vertex 1).
    #[error(
        "the outline crosses itself: edge {from_a}–{to_a} meets edge {from_b}–{to_b} \
         (draw the vertices in order around the zone)"
    )]
    SelfIntersecting {
        from_a: usize,
        to_a: usize,
        from_b: usize,
        to_b: usize,
    },
}

/// The most vertices a zone may have: far more than anyone draws, and it bounds the
/// quadratic self-intersection check.
pub const MAX_VERTICES: usize = 1000;

/// A closed polygon (the last vertex joins the first), possibly concave.
///
/// Simple: the outline never crosses or touches itself (a figure of eight, or vertices drawn
/// out of order, would make containment and [`Polygon::area`] mean something other than
/// what was drawn).
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    vertices: Vec<[f64; 2]>,
}

impl Polygon {
    /// Validates a zone as an operator drew it: 3 to [`MAX_VERTICES`] vertices, all within
    /// the picture, enclosing some area, with an outline that neither crosses nor touches
    /// itself.
    pub fn new(vertices: Vec<[f64; 2]>) -> Result<Polygon, GeometryError> {
        if vertices.len() < 3 {
            return Err(GeometryError::TooFewVertices(vertices.len()));
        }
        if vertices.len() > MAX_VERTICES {
            return Err(GeometryError::TooManyVertices(vertices.len()));
        }
        for (i, &[x, y]) in vertices.iter().enumerate() {
            let index = i + 1;
            if !x.is_finite() || !y.is_finite() {
                return Err(GeometryError::NotFinite { index, x, y });
            }
            if !(0.0..=1.0).contains(&x) || !(0.0..=1.0).contains(&y) {
                return Err(GeometryError::OutOfRange { index, x, y });
            }
        }
        let polygon = Polygon { vertices };
        if polygon.area() <= ON_EDGE_EPSILON * ON_EDGE_EPSILON {
            return Err(GeometryError::ZeroArea);
        }
        polygon.check_simple()?;
        Ok(polygon)
    }

    /// Refuses repeated vertices and outlines that cross or touch themselves: non-adjacent
    /// edges must not meet at all, and adjacent edges only at their shared vertex (an edge
    /// doubling back along the previous one is a spike of no width).
    fn check_simple(&self) -> Result<(), GeometryError> {
        let v = &self.vertices;
        let n = v.len();
        for i in 0..n {
            for j in 0..i {
                if close(v[i], v[j]) {
                    let [x, y] = v[i];
                    return Err(GeometryError::RepeatedVertex {
                        index: i + 1,
                        first: j + 1,
                        x,
                        y,
                    });
                }
            }
        }
        let crossing = |i: usize, j: usize| GeometryError::SelfIntersecting {
            from_a: i + 1,
            to_a: (i + 1) % n + 1,
            from_b: j + 1,
            to_b: (j + 1) % n + 1,
        };
        let edge = |i: usize| (v[i], v[(i + 1) % n]);
        for i in 0..n {
            let (a, b) = edge(i);
            for j in i + 1..n {
                let (c, d) = edge(j);
                let adjacent = j == i + 1 || (i == 0 && j == n - 1);
                let meet = if adjacent {
                    // Shared vertex: b == c (j after i) or a == d (edge n-1 before edge 0).
                    // They overlap beyond it only if one's far end lies on the other.
                    if j == i + 1 {
                        on_segment(a, c, d) || on_segment(d, a, b)
                    } else {
                        on_segment(b, c, d) || on_segment(c, a, b)
                    }
                } else {
                    segments_meet(a, b, c, d)
                };
                if meet {
                    return Err(crossing(i, j));
                }
            }
        }
        Ok(())
    }

    pub fn vertices(&self) -> &[[f64; 2]] {
        &self.vertices
    }

    /// Area in normalised units (1.0 = the whole picture), by the shoelace formula.
    pub fn area(&self) -> f64 {
        let twice_signed: f64 = self.edges().map(|(a, b)| a[0] * b[1] - b[0] * a[1]).sum();
        twice_signed.abs() / 2.0
    }

    /// Whether `point` lies in the polygon. Points on an edge or a vertex count as inside, so
    /// an object standing exactly on a zone's border belongs to the zone, and two zones
    /// sharing a border both claim it.
    pub fn contains(&self, point: [f64; 2]) -> bool {
        if self.edges().any(|(a, b)| on_segment(point, a, b)) {
            return true;
        }
        // Even-odd rule: count the edges crossed by a ray from `point` towards +x. The
        // half-open test on y counts a vertex the ray passes through exactly once.
        let [px, py] = point;
        let mut inside = false;
        for (a, b) in self.edges() {
            if (a[1] > py) != (b[1] > py) {
                let crossing_x = a[0] + (py - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                if px < crossing_x {
                    inside = !inside;
                }
            }
        }
        inside
    }

    fn edges(&self) -> impl Iterator<Item = ([f64; 2], [f64; 2])> + '_ {
        let next = self.vertices.iter().cycle().skip(1);
        self.vertices.iter().copied().zip(next.copied())
    }
}

/// Whether two points are the same within [`ON_EDGE_EPSILON`].
fn close(a: [f64; 2], b: [f64; 2]) -> bool {
    let (dx, dy) = (a[0] - b[0], a[1] - b[1]);
    dx * dx + dy * dy <= ON_EDGE_EPSILON * ON_EDGE_EPSILON
}

/// Twice the signed area of the triangle `a`, `b`, `c`: positive when `c` lies to the left
/// of `a`→`b`.
fn orientation(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

/// Whether the closed segments `a`–`b` and `c`–`d` cross or touch.
fn segments_meet(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let (d1, d2) = (orientation(a, b, c), orientation(a, b, d));
    let (d3, d4) = (orientation(c, d, a), orientation(c, d, b));
    let proper = ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0));
    proper
        || on_segment(c, a, b)
        || on_segment(d, a, b)
        || on_segment(a, c, d)
        || on_segment(b, c, d)
}

/// Whether `p` is within [`ON_EDGE_EPSILON`] of the segment `a`–`b`.
fn on_segment(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> bool {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let length_squared = dx * dx + dy * dy;
    let t = if length_squared > 0.0 {
        (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length_squared).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (ex, ey) = (a[0] + t * dx - p[0], a[1] + t * dy - p[1]);
    ex * ex + ey * ey <= ON_EDGE_EPSILON * ON_EDGE_EPSILON
}

/// The normalised bottom-centre of a box in source pixels. Zones are drawn on the ground, and
/// a box's bottom edge is where a vehicle or stall touches it; the box centre of a tall
/// truck parked beside a zone can float over the zone in the picture.
pub fn anchor_point(bbox: [f32; 4], frame_width: u32, frame_height: u32) -> [f64; 2] {
    let centre_x = (f64::from(bbox[0]) + f64::from(bbox[2])) / 2.0;
    [
        centre_x / f64::from(frame_width),
        f64::from(bbox[3]) / f64::from(frame_height),
    ]
}

/// The share of the frame a box in source pixels covers (0 for an inverted box).
pub fn box_area_fraction(bbox: [f32; 4], frame_width: u32, frame_height: u32) -> f64 {
    let width = f64::from(bbox[2] - bbox[0]).max(0.0);
    let height = f64::from(bbox[3] - bbox[1]).max(0.0);
    width * height / (f64::from(frame_width) * f64::from(frame_height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Vertices from flat `x, y` pairs.
    fn pairs(coordinates: &[f64]) -> Vec<[f64; 2]> {
        coordinates.chunks(2).map(|p| [p[0], p[1]]).collect()
    }

    fn polygon(coordinates: &[f64]) -> Polygon {
        Polygon::new(pairs(coordinates)).unwrap()
    }

    #[test]
    fn square_contains_interior_edges_and_vertices_only() {
        let square = polygon(&[0.2, 0.2, 0.6, 0.2, 0.6, 0.6, 0.2, 0.6]);
        assert!((square.area() - 0.16).abs() < 1e-12);
        assert!(square.contains([0.4, 0.4]));
        assert!(square.contains([0.6, 0.4]), "right edge");
        assert!(square.contains([0.4, 0.2]), "top edge");
        assert!(square.contains([0.2, 0.6]), "vertex");
        assert!(!square.contains([0.61, 0.4]));
        assert!(!square.contains([0.1, 0.1]));
    }

    #[test]
    fn concave_polygons_exclude_their_notch() {
        // A "U" opening upwards: the notch between its arms (x 0.4..0.6, y 0.2..0.6) is outside.
        let u = polygon(&[
            0.2, 0.2, 0.4, 0.2, 0.4, 0.6, 0.6, 0.6, 0.6, 0.2, 0.8, 0.2, 0.8, 0.8, 0.2, 0.8,
        ]);
        assert!((u.area() - (0.36 - 0.08)).abs() < 1e-12);
        assert!(u.contains([0.3, 0.3]), "left arm");
        assert!(u.contains([0.7, 0.3]), "right arm");
        assert!(u.contains([0.5, 0.7]), "base");
        assert!(!u.contains([0.5, 0.3]), "notch");
        assert!(u.contains([0.5, 0.6]), "bottom of the notch is an edge");
        assert!(u.contains([0.4, 0.4]), "side of the notch is an edge");
        // The notch's mouth: its ray runs along the right arm's top edge.
        assert!(!u.contains([0.5, 0.2]));

        let l_shape = polygon(&[0.1, 0.1, 0.3, 0.1, 0.3, 0.7, 0.9, 0.7, 0.9, 0.9, 0.1, 0.9]);
        assert!(l_shape.contains([0.2, 0.5]));
        assert!(l_shape.contains([0.8, 0.8]));
        assert!(!l_shape.contains([0.6, 0.4]), "the missing corner");
    }

    #[test]
    fn unusable_polygons_are_rejected_with_the_reason() {
        let err = |coordinates: &[f64]| Polygon::new(pairs(coordinates)).unwrap_err();
        assert_eq!(err(&[0.1, 0.1, 0.2, 0.2]), GeometryError::TooFewVertices(2));
        assert_eq!(
            err(&[0.1, 0.1, 0.9, 0.1, 1.2, 0.5]).to_string(),
            "vertex 3 (1.2, 0.5) is outside 0..1"
        );
        let not_finite = err(&[0.1, f64::NAN, 0.9, 0.1, 0.5, 0.5]);
        assert!(matches!(
            not_finite,
            GeometryError::NotFinite { index: 1, .. }
        ));
        assert_eq!(
            err(&[0.1, 0.1, 0.5, 0.5, 0.9, 0.9]),
            GeometryError::ZeroArea
        );
        assert_eq!(
            err(&[0.3, 0.3, 0.3, 0.3, 0.3, 0.3]),
            GeometryError::ZeroArea
        );
    }

    #[test]
    fn outlines_that_cross_or_touch_themselves_are_rejected() {
        let err = |coordinates: &[f64]| Polygon::new(pairs(coordinates)).unwrap_err();
        // A bow tie: vertices drawn out of order, the edges 1–2 and 3–4 cross.
        let bow_tie = err(&[0.1, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.9]);
        assert_eq!(
            bow_tie.to_string(),
            "the outline crosses itself: edge 1–2 meets edge 3–4 \
             (draw the vertices in order around the zone)"
        );
        // The same four corners in order are fine.
        polygon(&[0.1, 0.1, 0.9, 0.1, 0.9, 0.9, 0.1, 0.9]);
        // The closing edge (5–1) crosses edge 2–3.
        assert_eq!(
            err(&[0.1, 0.1, 0.5, 0.1, 0.5, 0.9, 0.9, 0.9, 0.9, 0.5]),
            GeometryError::SelfIntersecting {
                from_a: 2,
                to_a: 3,
                from_b: 5,
                to_b: 1
            }
        );
        // A vertex resting on a non-adjacent edge: the outline touches itself.
        let touching = err(&[0.1, 0.1, 0.9, 0.1, 0.9, 0.9, 0.5, 0.1, 0.1, 0.9]);
        assert!(
            matches!(touching, GeometryError::SelfIntersecting { .. }),
            "{touching}"
        );
        // A spike: edge 3–4 doubles back along edge 2–3.
        let spike = err(&[0.1, 0.1, 0.9, 0.1, 0.9, 0.9, 0.9, 0.5, 0.1, 0.9]);
        assert!(
            matches!(
                spike,
                GeometryError::SelfIntersecting {
                    from_a: 2,
                    from_b: 3,
                    ..
                }
            ),
            "{spike}"
        );
        // A vertex drawn twice (a double click).
        assert_eq!(
            err(&[0.1, 0.1, 0.9, 0.1, 0.9, 0.1, 0.1, 0.9]).to_string(),
            "vertex 3 (0.9, 0.1) repeats vertex 2"
        );
        // A redundant vertex on a straight edge is not a crossing.
        polygon(&[0.1, 0.1, 0.5, 0.1, 0.9, 0.1, 0.9, 0.9, 0.1, 0.9]);
        let too_many: Vec<[f64; 2]> = (0..=MAX_VERTICES)
            .map(|i| {
                let a = i as f64 / (MAX_VERTICES + 1) as f64 * std::f64::consts::TAU;
                [0.5 + 0.4 * a.cos(), 0.5 + 0.4 * a.sin()]
            })
            .collect();
        assert_eq!(
            Polygon::new(too_many.clone()).unwrap_err(),
            GeometryError::TooManyVertices(MAX_VERTICES + 1)
        );
        Polygon::new(too_many[..MAX_VERTICES].to_vec()).unwrap();
    }

    #[test]
    fn anchor_is_the_bottom_centre_and_area_is_a_fraction_of_the_frame() {
        let bbox = [100.0, 50.0, 300.0, 250.0];
        assert_eq!(anchor_point(bbox, 400, 500), [0.5, 0.5]);
        assert!((box_area_fraction(bbox, 400, 500) - 0.2).abs() < 1e-12);
        assert_eq!(box_area_fraction([10.0, 10.0, 5.0, 20.0], 400, 500), 0.0);
    }

    /// A star-shaped polygon (often concave): vertices at increasing angles around `centre`.
    fn star_polygon() -> impl Strategy<Value = Polygon> {
        (
            (0.3..0.7f64, 0.3..0.7f64),
            prop::collection::vec(0.02..0.29f64, 3..12),
        )
            .prop_filter_map("degenerate", |((cx, cy), radii)| {
                let step = std::f64::consts::TAU / radii.len() as f64;
                let vertices = radii
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        [
                            cx + r * (i as f64 * step).cos(),
                            cy + r * (i as f64 * step).sin(),
                        ]
                    })
                    .collect();
                Polygon::new(vertices).ok()
            })
    }

    proptest! {
        #[test]
        fn rectangle_contains_exactly_the_points_within_its_bounds(
            x0 in 0.0..0.5f64, y0 in 0.0..0.5f64, w in 0.01..0.5f64, h in 0.01..0.5f64,
            px in 0.0..1.0f64, py in 0.0..1.0f64,
        ) {
            let (x1, y1) = (x0 + w, y0 + h);
            let rectangle = polygon(&[x0, y0, x1, y0, x1, y1, x0, y1]);
            let within = (x0..=x1).contains(&px) && (y0..=y1).contains(&py);
            prop_assert_eq!(rectangle.contains([px, py]), within);
            prop_assert!(rectangle.contains([x0, py.clamp(y0, y1)]), "left edge");
            prop_assert!(rectangle.contains([x1, y1]), "vertex");
        }

        #[test]
        fn vertex_order_does_not_change_containment(
            shape in star_polygon(), px in 0.0..1.0f64, py in 0.0..1.0f64,
        ) {
            let mut reversed = shape.vertices().to_vec();
            reversed.reverse();
            let reversed = Polygon::new(reversed).unwrap();
            prop_assert_eq!(shape.contains([px, py]), reversed.contains([px, py]));
            prop_assert!((shape.area() - reversed.area()).abs() < 1e-12);
        }

        #[test]
        fn convex_polygons_are_simple_and_two_vertices_swapped_cross(
            (cx, cy) in (0.3..0.7f64, 0.3..0.7f64), radius in 0.02..0.29f64,
            mut angles in prop::collection::vec(0.0..std::f64::consts::TAU, 4..12),
            pick in any::<prop::sample::Index>(),
        ) {
            angles.sort_by(f64::total_cmp);
            let gaps = angles.windows(2).map(|w| w[1] - w[0]);
            let wrap = std::f64::consts::TAU - (angles[angles.len() - 1] - angles[0]);
            prop_assume!(gaps.chain([wrap]).all(|gap| gap > 0.05));
            let vertices: Vec<[f64; 2]> =
                angles.iter().map(|a| [cx + radius * a.cos(), cy + radius * a.sin()]).collect();
            prop_assert!(Polygon::new(vertices.clone()).is_ok());
            // Swapping neighbours makes the two diagonals of a convex quadrilateral edges.
            let i = pick.index(vertices.len());
            let mut swapped = vertices;
            let n = swapped.len();
            swapped.swap(i, (i + 1) % n);
            let err = Polygon::new(swapped).unwrap_err();
            prop_assert!(matches!(err, GeometryError::SelfIntersecting { .. }), "{}", err);
        }

        #[test]
        fn convex_polygon_contains_its_centroid(
            (cx, cy) in (0.3..0.7f64, 0.3..0.7f64), radius in 0.02..0.29f64,
            mut angles in prop::collection::vec(0.0..std::f64::consts::TAU, 3..10),
        ) {
            // Points on a circle, taken in angle order, form a convex polygon.
            angles.sort_by(f64::total_cmp);
            let vertices: Vec<[f64; 2]> =
                angles.iter().map(|a| [cx + radius * a.cos(), cy + radius * a.sin()]).collect();
            let n = vertices.len() as f64;
            let centroid = [
                vertices.iter().map(|v| v[0]).sum::<f64>() / n,
                vertices.iter().map(|v| v[1]).sum::<f64>() / n,
            ];
            if let Ok(shape) = Polygon::new(vertices) {
                prop_assert!(shape.contains(centroid));
            }
        }
    }
}
