//! The `skipgrad` command. `skipgrad summary <model>` prints a model's layers with their output
//! shapes, parameters and multiply-adds.

use clap::{Parser, Subcommand};
use skipgrad_nn::{Config, Shortcut, summary};
use std::process::ExitCode;

/// skipgrad: residual-network experiments on a from-scratch autodiff and JIT compiler.
#[derive(Parser)]
#[command(name = "skipgrad", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-layer table of a model: name, type, output shape, parameters, multiply-adds; and totals.
    Summary {
        /// The model: resnet20, plain56, resnet1202 (CIFAR, any depth 6n+2), resnet18 ... resnet152,
        /// plain18, plain34 (ImageNet); cifar- or imagenet- picks the family of a depth both allow.
        model: String,
        /// Input channels x height x width (default: 3x32x32 for CIFAR nets, 3x224x224 for ImageNet).
        #[arg(long, value_parser = parse_input)]
        input: Option<[usize; 3]>,
        /// Classes of the classifier (default: 10 for CIFAR nets, 1000 for ImageNet).
        #[arg(long)]
        classes: Option<usize>,
        /// Shortcut option of a residual net where the shape changes: A, B or C.
        #[arg(long, value_parser = parse_shortcut)]
        shortcut: Option<Shortcut>,
    },
}

/// `CxHxW` as three positive sizes.
fn parse_input(text: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = text.split(['x', 'X']).collect();
    let sizes: Vec<usize> = parts.iter().filter_map(|p| p.trim().parse().ok()).filter(|&n| n > 0).collect();
    match sizes[..] {
        [c, h, w] if parts.len() == 3 => Ok([c, h, w]),
        _ => Err(format!("expected CxHxW with three positive sizes, like 3x32x32 or 1x28x28; got {text:?}")),
    }
}

fn parse_shortcut(text: &str) -> Result<Shortcut, String> {
    match text.to_ascii_uppercase().as_str() {
        "A" => Ok(Shortcut::A),
        "B" => Ok(Shortcut::B),
        "C" => Ok(Shortcut::C),
        _ => Err(format!("expected A, B or C; got {text:?}")),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("skipgrad: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Summary { model, input, classes, shortcut } => {
            let mut config = Config::named(&model).map_err(|e| e.to_string())?;
            if let Some([c, _, _]) = input {
                config.in_channels = c;
            }
            config.classes = classes.unwrap_or(config.classes);
            config.shortcut = shortcut.unwrap_or(config.shortcut);
            if config.classes == 0 {
                return Err("--classes must be at least 1".into());
            }
            let input = input.unwrap_or_else(|| config.default_input());
            let s = summary(&config, input).map_err(|e| e.to_string())?;
            print!("{s}");
            Ok(())
        }
    }
}
