//! Checkpoints: torchvision names, bit-identical outputs after a save and load, one clear error
//! for a mismatched file, and clear errors (never a panic) for truncated or corrupt files.

use skipgrad_autodiff::Tape;
use skipgrad_ir::{DType, Tensor};
use skipgrad_nn::{Checkpoint, Config, Error, Mode, ResNet, Scope, Shortcut};
use std::path::PathBuf;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skipgrad-checkpoint-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn images(n: usize, hw: usize) -> Tensor {
    let values: Vec<f32> = (0..n * 3 * hw * hw).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
    Tensor::f32([n, 3, hw, hw], values).unwrap()
}

/// The eval-mode logits of a net built in `scope` on `tape` (eager).
fn logits(tape: &Tape, net: &ResNet, x: &Tensor) -> Vec<f64> {
    let x = tape.input("images", x.clone()).unwrap();
    net.forward(&x, Mode::Eval).unwrap().value().unwrap().to_f64_vec()
}

fn names(config: &Config) -> Vec<String> {
    let tape = Tape::trace(DType::F32);
    let scope = Scope::new(&tape, 0);
    ResNet::new(&scope, config).unwrap();
    scope.entries().into_iter().map(|e| e.name).collect()
}

#[test]
fn tensors_are_named_as_torchvision_names_them() {
    let cifar = names(&Config::named("resnet20").unwrap());
    assert_eq!(cifar.len(), 1 + 4 + 9 * (2 + 8) + 2);
    for n in ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"] {
        assert!(cifar.contains(&n.to_string()), "{n}");
    }
    assert!(cifar.contains(&"layer3.2.bn2.running_var".to_string()));
    assert_eq!(&cifar[cifar.len() - 2..], ["fc.weight", "fc.bias"]);
    let r18 = names(&Config::named("resnet18").unwrap());
    assert!(r18.contains(&"layer2.0.downsample.0.weight".to_string()));
    assert!(r18.contains(&"layer2.0.downsample.1.running_mean".to_string()));
    assert!(!r18.contains(&"layer1.0.downsample.0.weight".to_string()), "option B: identity where the shape holds");
    let r50 = names(&Config::named("resnet50").unwrap());
    assert!(r50.contains(&"layer1.0.conv3.weight".to_string()) && r50.contains(&"layer1.0.bn3.bias".to_string()));
    assert!(r50.contains(&"layer1.0.downsample.0.weight".to_string()), "64 to 256 channels projects");
    let c = names(&Config { shortcut: Shortcut::C, ..Config::named("resnet18").unwrap() });
    assert!(c.contains(&"layer1.0.downsample.0.weight".to_string()), "option C projects everywhere");
}

#[test]
fn the_same_seed_gives_the_same_weights_and_he_scale() {
    let config = Config::named("resnet20").unwrap();
    let draw = |seed: u64| {
        let tape = Tape::trace(DType::F32);
        let scope = Scope::new(&tape, seed);
        ResNet::new(&scope, &config).unwrap();
        scope.entries()
    };
    let (a, b, c) = (draw(5), draw(5), draw(6));
    assert!(a.iter().zip(&b).all(|(x, y)| x.init == y.init));
    assert!(a.iter().zip(&c).any(|(x, y)| x.init != y.init));
    // He: std sqrt(2 / fan_out) for layer3's 3x3 convolutions (fan_out 64 x 9).
    let w = a.iter().find(|e| e.name == "layer3.1.conv1.weight").unwrap().init.to_f64_vec();
    let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
    let want = (2.0 / 576.0f64).sqrt();
    assert!((std / want - 1.0).abs() < 0.02, "{std} vs {want}");
    let gamma = a.iter().find(|e| e.name == "layer1.0.bn2.weight").unwrap().init.to_f64_vec();
    assert!(gamma.iter().all(|&g| g == 1.0));
    let zero = Config { zero_init_residual: true, ..config.clone() };
    let tape = Tape::trace(DType::F32);
    let scope = Scope::new(&tape, 5);
    ResNet::new(&scope, &zero).unwrap();
    let gamma = scope.entries().into_iter().find(|e| e.name == "layer1.0.bn2.weight").unwrap().init.to_f64_vec();
    assert!(gamma.iter().all(|&g| g == 0.0));
}

#[test]
fn a_saved_and_loaded_net_gives_bit_identical_outputs() {
    let dir = temp_dir("roundtrip");
    let config = Config { classes: 7, ..Config::named("resnet8").unwrap() };
    let x = images(2, 12);
    let tape = Tape::eager(DType::F32);
    let scope = Scope::new(&tape, 11);
    let net = ResNet::new(&scope, &config).unwrap();
    let before = logits(&tape, &net, &x);
    let mut checkpoint = Checkpoint::of_scope(&config, &scope, |e| e.init.clone());
    checkpoint.metadata.insert("note".into(), "pixel scale 1/255".into());
    let path = dir.join("model.safetensors");
    checkpoint.save(&path).unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, ["model.safetensors"], "no temporary file is left");

    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded, checkpoint);
    let tape = Tape::eager(DType::F32);
    let (_, rebuilt) = loaded.build(&tape).unwrap();
    assert_eq!(rebuilt.config, config);
    assert_eq!(logits(&tape, &rebuilt, &x), before, "bit-identical logits");
    // Another seed gives other logits: the comparison can fail.
    let tape = Tape::eager(DType::F32);
    let other = ResNet::new(&Scope::new(&tape, 12), &config).unwrap();
    assert_ne!(logits(&tape, &other, &x), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_mismatched_checkpoint_lists_everything_that_does_not_fit() {
    let config = Config::named("resnet8").unwrap();
    let scope = Scope::new(&Tape::trace(DType::F32), 1);
    ResNet::new(&scope, &config).unwrap();
    let mut checkpoint = Checkpoint::of_scope(&config, &scope, |e| e.init.clone());
    checkpoint.tensors.remove("layer2.0.bn1.bias");
    checkpoint.tensors.remove("fc.bias");
    checkpoint.tensors.insert("layer9.0.conv1.weight".into(), Tensor::f32([1], vec![0.0]).unwrap());
    checkpoint.tensors.insert("fc.weight".into(), Tensor::f32([3, 64], vec![0.0; 192]).unwrap());
    let err = match checkpoint.build(&Tape::trace(DType::F32)) {
        Err(e) => e,
        Ok(_) => panic!("a mismatched checkpoint built"),
    };
    let Error::Mismatch { mismatch, .. } = &err else { panic!("{err}") };
    assert_eq!(mismatch.missing, ["layer2.0.bn1.bias", "fc.bias"]);
    assert_eq!(mismatch.unexpected, ["layer9.0.conv1.weight"]);
    assert_eq!(mismatch.misshaped, [("fc.weight".to_string(), vec![10, 64], vec![3, 64])]);
    let message = err.to_string();
    assert!(
        message.contains("missing layer2.0.bn1.bias, fc.bias")
            && message.contains("fc.weight (model [10, 64], file [3, 64])"),
        "{message}"
    );
}

#[test]
fn truncated_and_corrupt_files_are_errors_not_panics() {
    let dir = temp_dir("corrupt");
    let config = Config::named("resnet8").unwrap();
    let scope = Scope::new(&Tape::trace(DType::F32), 1);
    ResNet::new(&scope, &config).unwrap();
    let path = dir.join("good.safetensors");
    Checkpoint::of_scope(&config, &scope, |e| e.init.clone()).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // Every truncation point in the header, then a sample of the data.
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let cuts = (0..header + 64).chain((header..bytes.len()).step_by(997));
    for cut in cuts {
        match Checkpoint::from_bytes("cut", &bytes[..cut]) {
            Err(Error::Corrupt { path, message }) => assert!(path == "cut" && !message.is_empty()),
            other => panic!("{cut} of {} bytes: {other:?}", bytes.len()),
        }
    }
    // Flipped bytes in the header: an error or, when the header still parses, a checkpoint.
    for at in (0..header).step_by(7) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        let _ = Checkpoint::from_bytes("flipped", &bad);
    }
    // A safetensors file that is not a skipgrad checkpoint, and a wrong model name.
    let plain = std::fs::read(&path).unwrap();
    let replaced = String::from_utf8_lossy(&plain[8..header]).replace("skipgrad-checkpoint-1", "skipgrad-checkpoint-9");
    let mut other = plain[..8].to_vec();
    other.extend(replaced.as_bytes());
    other.extend(&plain[header..]);
    let err = Checkpoint::from_bytes("v9", &other).unwrap_err().to_string();
    assert!(err.contains("v9") && err.contains("skipgrad-checkpoint-9"), "{err}");
    let missing = Checkpoint::load(&dir.join("absent.safetensors")).unwrap_err().to_string();
    assert!(missing.contains("absent.safetensors"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}
