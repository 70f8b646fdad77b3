//! `skipgrad responses`: one standard deviation per 3x3 layer, from a seeded model or a checkpoint.

mod common;

use common::skipgrad;

use skipgrad_autodiff::Tape;
use skipgrad_ir::DType;
use skipgrad_nn::{Checkpoint, Config, ResNet, Scope};

/// (layer, std) rows of an output.
fn rows(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .skip(2)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .collect()
}

#[test]
fn responses_list_every_3x3_layer() {
    let (ok, out, err) = skipgrad(&["responses", "resnet8", "--batch", "4", "--threads", "1"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("resnet8 (seed 0): responses of 7 3x3 layers on 4 images of 3x32x32"), "{out}");
    let r = rows(&out);
    let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer2.0.bn1", "layer2.0.bn2", "layer3.0.bn1", "layer3.0.bn2"]
    );
    assert!(r.iter().all(|(_, s)| s.is_finite() && *s > 0.0), "{out}");
    // Normalised with the batch's own statistics (scale 1, shift 0), every response has std 1.
    let (ok, out, _) = skipgrad(&["responses", "resnet8", "--batch", "4", "--bn-mode", "train"]);
    assert!(ok && rows(&out).iter().all(|(_, s)| (s - 1.0).abs() < 1e-3), "{out}");
}

#[test]
fn a_checkpoints_responses_are_its_own() {
    let dir = std::env::temp_dir().join(format!("skipgrad-responses-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plain8.safetensors");
    let config = Config::named("plain8").unwrap();
    let scope = Scope::new(&Tape::trace(DType::F32), 3);
    ResNet::new(&scope, &config).unwrap();
    Checkpoint::of_scope(&config, &scope, |e| e.init.clone()).save(&path).unwrap();
    let file = path.to_str().unwrap();
    let (ok, out, err) = skipgrad(&["responses", "--checkpoint", file, "--batch", "4", "--seed", "3"]);
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("plain8 ({file}): responses of 7")), "{out}");
    // The same weights drawn from the same seed give the same responses.
    let (_, seeded, _) = skipgrad(&["responses", "plain8", "--batch", "4", "--seed", "3"]);
    assert_eq!(rows(&out), rows(&seeded));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_say_what_was_wrong() {
    for (args, says) in [
        (vec!["responses"], "<MODEL>"),
        (vec!["responses", "--checkpoint", "/nonexistent/model.safetensors"], "/nonexistent/model.safetensors"),
        (vec!["responses", "resnet8", "--input", "1x32x32"], "takes 3"),
        (vec!["responses", "resnet8", "--batch", "0"], "--batch"),
    ] {
        let (ok, _, err) = skipgrad(&args);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
}
