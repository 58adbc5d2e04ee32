use super::*;

/// A street-like texture with a little noise that differs in every sample `t`, so that no
/// two samples are exactly alike (encoder noise, leaves).
fn street(c: usize, r: usize, t: u32) -> f32 {
    let texture = 90.0 + 30.0 * ((c * 7 + r * 3) % 5) as f32 + 20.0 * ((c / 4 + r / 3) % 2) as f32;
    let noise = ((c * 31 + r * 17 + t as usize * 13) % 7) as f32 - 3.0;
    texture + noise
}

/// Sample `t` of the street with dark blocks of 4×3 cells at `blocks` (column, row).
fn with_blocks(t: u32, blocks: &[(usize, usize)]) -> SceneGrid {
    SceneGrid::from_fn(|c, r| {
        let covered = blocks
            .iter()
            .any(|&(bc, br)| (bc..bc + 4).contains(&c) && (br..br + 3).contains(&r));
        if covered {
            30.0
        } else {
            street(c, r, t)
        }
    })
    .unwrap()
}

fn nothing_detected() -> Vec<bool> {
    vec![false; COLUMNS * ROWS]
}

/// A scene that has learned the empty street from `learn_samples` samples.
fn learned_scene() -> (Scene, u32) {
    let mut scene = Scene::new(SceneConfig::default());
    let mut t = 0;
    while t < SceneConfig::default().learn_samples {
        assert!(scene
            .observe(&with_blocks(t, &[]), &nothing_detected())
            .is_empty());
        t += 1;
    }
    assert_eq!(scene.learned(), 1.0);
    (scene, t)
}

#[test]
fn a_block_that_appears_and_stays_is_reported_after_the_confirming_samples() {
    let (mut scene, t0) = learned_scene();
    let confirm = SceneConfig::default().confirm_samples;
    for i in 0..confirm - 1 {
        let found = scene.observe(&with_blocks(t0 + i, &[(20, 25)]), &nothing_detected());
        assert!(found.is_empty(), "reported after {} samples", i + 1);
    }
    for i in confirm - 1..confirm + 10 {
        let found = scene.observe(&with_blocks(t0 + i, &[(20, 25)]), &nothing_detected());
        assert_eq!(found.len(), 1, "sample {i}: {found:?}");
        let region = found[0];
        assert_eq!(
            (region.c0, region.r0, region.c1, region.r1),
            (20, 25, 24, 28)
        );
        assert_eq!(region.cells, 12);
        assert!(region.score(0.15) > 0.9, "{region:?}");
    }
    // In the pixels of a 640×360 picture: columns of 10 px, rows of 10 px.
    let region = scene.observe(&with_blocks(99, &[(20, 25)]), &nothing_detected())[0];
    assert_eq!(region.bbox(640, 360), [200.0, 250.0, 240.0, 280.0]);
}

#[test]
fn a_block_that_moves_every_sample_is_never_reported() {
    let (mut scene, t0) = learned_scene();
    for i in 0..30 {
        // Walking along the pavement, a few cells per sample, and back.
        let column = 4 + (i as usize * 5) % 50;
        let found = scene.observe(&with_blocks(t0 + i, &[(column, 20)]), &nothing_detected());
        assert!(found.is_empty(), "sample {i}: {found:?}");
    }
}

#[test]
fn light_changing_over_the_whole_picture_is_nothing_new() {
    let (mut scene, t0) = learned_scene();
    // Dusk, a cloud, the camera's exposure: every cell darker or brighter by one factor,
    // with some haze (an offset) on top.
    let lights = [(0.5, 0.0), (1.6, 0.0), (0.6, 12.0), (1.2, -8.0)];
    for (i, (gain, offset)) in lights.iter().flat_map(|&l| [l; 4]).enumerate() {
        let t = t0 + i as u32;
        let grid = SceneGrid::from_fn(|c, r| gain * street(c, r, t) + offset).unwrap();
        let found = scene.observe(&grid, &nothing_detected());
        assert!(found.is_empty(), "gain {gain} offset {offset}: {found:?}");
    }
    // A black picture says nothing.
    assert!(SceneGrid::from_fn(|_, _| 0.0).is_none());
}

#[test]
fn a_block_that_goes_away_takes_its_region_with_it() {
    let (mut scene, t0) = learned_scene();
    let mut t = t0;
    for _ in 0..10 {
        scene.observe(&with_blocks(t, &[(40, 10)]), &nothing_detected());
        t += 1;
    }
    assert_eq!(
        scene
            .observe(&with_blocks(t, &[(40, 10)]), &nothing_detected())
            .len(),
        1
    );
    // Cleared: the cells show the learned street again at once, and stay learned (the
    // block was never learned into the scene).
    for i in 1..20 {
        let found = scene.observe(&with_blocks(t + i, &[]), &nothing_detected());
        assert!(found.is_empty(), "{found:?}");
    }
    // The same block coming back is new again.
    let back: Vec<usize> = (0..4)
        .map(|i| {
            scene
                .observe(&with_blocks(t + 20 + i, &[(40, 10)]), &nothing_detected())
                .len()
        })
        .collect();
    assert_eq!(back, [0, 0, 1, 1]);
}

#[test]
fn a_block_standing_during_learning_is_not_learned_where_a_model_detects_it() {
    // A parked car the model detects while the scene is learned: its cells stay unknown
    // (the empty road is not a car), the rest is learned.
    let mut scene = Scene::new(SceneConfig::default());
    let car = [(10, 10)];
    let mut detected = nothing_detected();
    for r in 10..13 {
        for c in 10..14 {
            detected[r * COLUMNS + c] = true;
        }
    }
    for t in 0..5 {
        scene.observe(&with_blocks(t, &car), &detected);
    }
    assert_eq!(scene.learned(), 1.0 - 12.0 / (COLUMNS * ROWS) as f32);
    // The car leaves: its place is learned as road, and nothing is reported there.
    for t in 5..15 {
        assert!(scene
            .observe(&with_blocks(t, &[]), &nothing_detected())
            .is_empty());
    }
    assert_eq!(scene.learned(), 1.0);
    // Without the model's help the car is learned as the scene, and its leaving looks new:
    // the limit the README names.
    let mut blind = Scene::new(SceneConfig::default());
    for t in 0..5 {
        blind.observe(&with_blocks(t, &car), &nothing_detected());
    }
    let found: usize = (5..10)
        .map(|t| {
            blind
                .observe(&with_blocks(t, &[]), &nothing_detected())
                .len()
        })
        .sum();
    assert!(found > 0);
}

#[test]
fn regions_inside_a_model_detection_are_left_to_its_label() {
    let (mut scene, t0) = learned_scene();
    let (width, height) = (640, 360);
    // A car parks on the block at 20, 25 (pixels 200..240 × 250..280) and another thing
    // stands at 40, 10 (400..440 × 100..130) that the model cannot name.
    let car = Detection {
        label: "car".into(),
        class: 2,
        score: 0.8,
        bbox: [190.0, 240.0, 250.0, 290.0],
    };
    let mut found = Vec::new();
    for i in 0..5 {
        let grid = with_blocks(t0 + i, &[(20, 25), (40, 10)]);
        found = scene.new_objects(&grid, std::slice::from_ref(&car), width, height);
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].label, NEW_OBJECT);
    assert_eq!(found[0].bbox, [400.0, 100.0, 440.0, 130.0]);
    assert!(found[0].score > 0.9);
}

#[test]
fn a_reset_forgets_the_scene() {
    let (mut scene, t0) = learned_scene();
    for i in 0..5 {
        scene.observe(&with_blocks(t0 + i, &[(20, 25)]), &nothing_detected());
    }
    scene.reset();
    assert_eq!(scene.learned(), 0.0);
    // Learned anew with the block in it: it is part of this scene.
    for i in 0..10 {
        let found = scene.observe(&with_blocks(t0 + 5 + i, &[(20, 25)]), &nothing_detected());
        assert!(found.is_empty());
    }
}

#[test]
fn small_regions_and_bad_settings() {
    let (mut scene, t0) = learned_scene();
    // One cell is below the default two.
    let speck = |t: u32| {
        SceneGrid::from_fn(|c, r| {
            if (c, r) == (5, 5) {
                250.0
            } else {
                street(c, r, t)
            }
        })
        .unwrap()
    };
    for i in 0..6 {
        assert!(scene
            .observe(&speck(t0 + i), &nothing_detected())
            .is_empty());
    }
    assert!(SceneConfig::default().check().is_ok());
    let bad = |config: SceneConfig| config.check().unwrap_err();
    let base = SceneConfig::default();
    assert!(bad(SceneConfig {
        difference: 0.0,
        ..base
    })
    .contains("`difference` = 0"));
    assert!(bad(SceneConfig {
        learning_rate: 2.0,
        ..base
    })
    .contains("`learning_rate` = 2"));
    assert!(bad(SceneConfig {
        confirm_samples: 0,
        ..base
    })
    .contains("`confirm_samples` must be at least 1"));
}

#[test]
fn cells_under_a_box_are_those_whose_centre_it_holds() {
    // 640×360: cells of 10×10 pixels, centres at 5, 15, …
    let under = cells_under(&[[10.0, 0.0, 34.0, 9.0]], 640, 360);
    let marked: Vec<(usize, usize)> = (0..COLUMNS * ROWS)
        .filter(|&i| under[i])
        .map(|i| (i % COLUMNS, i / COLUMNS))
        .collect();
    assert_eq!(marked, [(1, 0), (2, 0)]);
    assert!(cells_under(&[[700.0, 400.0, 800.0, 500.0]], 640, 360)
        .iter()
        .all(|u| !u));
    assert_eq!(
        inside_fraction([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 20.0, 20.0]),
        0.5
    );
    assert_eq!(
        inside_fraction([0.0, 0.0, 0.0, 10.0], [0.0, 0.0, 20.0, 20.0]),
        0.0
    );
}
