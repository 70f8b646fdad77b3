//! `skipgrad summary` end to end: the table and totals, and clear errors for bad arguments.

mod common;

use common::skipgrad;

#[test]
fn summary_prints_every_layer_and_the_papers_totals() {
    let (ok, out, err) = skipgrad(&["summary", "resnet20"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("resnet20 on 3x32x32\n"), "{out}");
    let last_conv = out.lines().find(|l| l.starts_with("layer3.2.conv2 ")).unwrap_or_default();
    let fields: Vec<&str> = last_conv.split_whitespace().collect();
    assert_eq!(fields, ["layer3.2.conv2", "Conv2d", "64x8x8", "36,864", "2,359,296"], "{out}");
    assert!(
        out.ends_with("total: 269,722 parameters (1,376 buffer values), 40,551,040 multiply-adds per image\n"),
        "{out}"
    );
    let (ok, out, _) = skipgrad(&["summary", "resnet20", "--input", "1x28x28"]);
    assert!(ok && out.contains("total: 269,434 parameters"), "{out}");
    let (ok, out, _) = skipgrad(&["summary", "resnet34", "--shortcut", "c", "--classes", "100"]);
    assert!(ok && out.contains("layer1.0.downsample.0") && out.contains(" 100 "), "{out}");
}

#[test]
fn bad_arguments_say_what_was_wrong() {
    for (args, says) in [
        (vec!["summary", "resnet21"], "6n+2"),
        (vec!["summary", "resnet20", "--input", "3x32"], "CxHxW"),
        (vec!["summary", "resnet20", "--shortcut", "D"], "A, B or C"),
        (vec!["summary", "resnet20", "--classes", "0"], "--classes"),
        (vec!["summary", "resnet20", "--input", "0x32x32"], "positive"),
        (vec!["summary"], "<MODEL>"),
    ] {
        let (ok, _, err) = skipgrad(&args);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
}

/// The README's `skipgrad summary resnet110` excerpt is the command's real output.
#[test]
fn the_readme_shows_real_output() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let command = "$ cargo run --release -p skipgrad-cli -- summary resnet110\n";
    let start = readme.find(command).expect("the README shows the summary") + command.len();
    let excerpt: Vec<&str> = readme[start..].lines().take_while(|l| *l != "```").filter(|l| *l != "...").collect();
    let (ok, out, err) = skipgrad(&["summary", "resnet110"]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    for line in excerpt {
        assert!(lines.any(|l| l == line), "the README's line is not in the output (in order): {line}");
    }
}
