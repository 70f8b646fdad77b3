//! The model zoo against the paper's figures (`shared/PAPER.md`): exact parameter counts and
//! multiply-adds of the CIFAR nets, plain nets equal to their residual twins, and the ImageNet
//! nets' multiply-adds within 3% of Table 1.

use skipgrad_nn::{Config, Family, Shortcut, summary};

#[test]
fn cifar_nets_have_the_papers_exact_counts() {
    for (name, params, macs) in [
        ("resnet20", 269_722, 40_551_040u64),
        ("resnet32", 464_154, 68_862_592),
        ("resnet44", 658_586, 97_174_144),
        ("resnet56", 853_018, 125_485_696),
        ("resnet110", 1_727_962, 252_887_680),
        ("resnet1202", 19_421_274, 2_829_238_912),
    ] {
        let config = Config::named(name).unwrap();
        let s = summary(&config, [3, 32, 32]).unwrap();
        assert_eq!((s.parameters, s.multiply_adds), (params, macs), "{name}");
        // Plain-k has ResNet-k's parameters and multiply-adds: option A adds none.
        let plain = Config { residual: false, ..config };
        let p = summary(&plain, [3, 32, 32]).unwrap();
        assert_eq!((p.parameters, p.multiply_adds), (params, macs), "plain twin of {name}");
    }
}

#[test]
fn fashion_mnist_resnet20_has_the_papers_counts() {
    let config = Config { in_channels: 1, ..Config::named("resnet20").unwrap() };
    let s = summary(&config, [1, 28, 28]).unwrap();
    assert_eq!((s.parameters, s.multiply_adds), (269_434, 30_821_248));
    assert_eq!(s.layers.last().unwrap().output, vec![1, 10]);
}

#[test]
fn imagenet_nets_are_within_three_percent_of_table_1() {
    for (name, paper) in
        [("resnet18", 1.8e9), ("resnet34", 3.6e9), ("resnet50", 3.8e9), ("resnet101", 7.6e9), ("resnet152", 11.3e9)]
    {
        let config = Config::named(name).unwrap();
        assert_eq!((config.family, config.shortcut, config.classes), (Family::ImageNet, Shortcut::B, 1000));
        let s = summary(&config, [3, 224, 224]).unwrap();
        let ratio = s.multiply_adds as f64 / paper;
        assert!((0.97..=1.03).contains(&ratio), "{name}: {} multiply-adds, {ratio:.3} of the paper's", s.multiply_adds);
        assert_eq!(s.layers.last().unwrap().output, vec![1, 1000]);
    }
    // Plain-18 and -34 have the same layers without shortcuts; options A and C change only the
    // shortcut (A: no parameters; C: a projection on every block).
    let [plain, a, b, c] = [
        Config { residual: false, ..Config::named("resnet34").unwrap() },
        Config { shortcut: Shortcut::A, ..Config::named("resnet34").unwrap() },
        Config::named("resnet34").unwrap(),
        Config { shortcut: Shortcut::C, ..Config::named("resnet34").unwrap() },
    ]
    .map(|c| summary(&c, [3, 224, 224]).unwrap().parameters);
    assert_eq!(plain, a);
    assert!(a < b && b < c, "{a} {b} {c}");
    assert_eq!(Config::named("plain34").unwrap(), Config { residual: false, ..Config::named("resnet34").unwrap() });
}

#[test]
fn names_parse_and_bad_names_say_why() {
    assert_eq!(Config::named("ResNet-110").unwrap().name(), "resnet110");
    assert_eq!(Config::named("cifar-resnet50").unwrap().family, Family::Cifar);
    assert_eq!(Config::named("cifar-resnet50").unwrap().name(), "cifar-resnet50");
    assert_eq!(Config::named("resnet50").unwrap().name(), "resnet50");
    for (bad, says) in
        [("resnet21", "6n+2"), ("vgg16", "resnet<depth>"), ("resnet", "number"), ("imagenet-resnet20", "18, 34, 50")]
    {
        let err = Config::named(bad).unwrap_err().to_string();
        assert!(err.contains(bad) && err.contains(says), "{bad}: {err}");
    }
}
