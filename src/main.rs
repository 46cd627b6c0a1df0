/// Small allocations from a static arena (see `sys::alloc`): no mmap/munmap churn per request.
#[global_allocator]
static ALLOC: cni_multi::sys::alloc::Arena = cni_multi::sys::alloc::Arena;

fn main() {
    std::process::exit(cni_multi::cli::main());
}
