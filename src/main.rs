fn main() {
    std::process::exit(cni_multi::cli::main());
}
