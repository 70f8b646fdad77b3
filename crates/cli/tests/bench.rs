//! `skipgrad bench`: times a compiled step and reports it, in words or JSON.

mod common;

use common::skipgrad;

#[test]
fn bench_reports_step_times_throughput_and_memory() {
    for mode in ["train", "infer"] {
        let args = [
            "bench",
            "--model",
            "resnet8",
            "--batch",
            "4",
            "--input",
            "3x16x16",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--mode",
            mode,
            "--json",
        ];
        let (ok, out, err) = skipgrad(&args);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let (min, median, max) =
            (v["min_s"].as_f64().unwrap(), v["median_s"].as_f64().unwrap(), v["max_s"].as_f64().unwrap());
        assert!(0.0 < min && min <= median && median <= max, "{out}");
        assert!((v["images_per_s"].as_f64().unwrap() - 4.0 / median).abs() < 1e-6 * 4.0 / median, "{out}");
        assert!(v["gflops"].as_f64().unwrap() > 0.0 && v["peak_rss_mb"].as_f64().unwrap() > 1.0, "{out}");
        assert_eq!((v["mode"].as_str(), v["steps"].as_u64(), v["threads"].as_u64()), (Some(mode), Some(3), Some(1)));
        assert_eq!(v["winograd"].as_str(), Some("f4"), "{out}");
    }
    // The Winograd tiles are a setting, reported with the figures.
    let (ok, out, err) =
        skipgrad(&["bench", "--model", "resnet8", "--batch", "4", "--steps", "1", "--winograd", "off", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["winograd"].as_str(), Some("off"), "{out}");
    let (ok, _, err) = skipgrad(&["bench", "--model", "resnet8", "--winograd", "f8"]);
    assert!(!ok && err.contains("--winograd"), "{err}");
    let (ok, out, _) = skipgrad(&["bench", "--model", "resnet8", "--batch", "2", "--input", "3x8x8", "--steps", "1"]);
    assert!(ok && out.starts_with("resnet8 train, batch 2 of 3x8x8") && out.contains("images/s"), "{out}");
    // So are the vectors and the multiply-add form; what the CPU cannot run is an error.
    let args = [
        "bench",
        "--model",
        "resnet8",
        "--batch",
        "2",
        "--steps",
        "1",
        "--lanes",
        "4",
        "--mul-add",
        "separate",
        "--json",
    ];
    let (ok, out, err) = skipgrad(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["lanes"].as_u64(), v["mul_add"].as_str()), (Some(4), Some("separate")), "{out}");
    let (ok, _, err) = skipgrad(&["bench", "--model", "resnet8", "--steps", "1", "--lanes", "5"]);
    assert!(!ok && err.contains("5 lanes"), "{err}");
    let (ok, _, err) = skipgrad(&["bench", "--model", "resnet8", "--mul-add", "fma"]);
    assert!(!ok && err.contains("--mul-add"), "{err}");
    let (ok, _, err) = skipgrad(&["bench", "--model", "resnet8", "--steps", "0"]);
    assert!(!ok && err.contains("--steps"), "{err}");
}
