//! argv[0] dispatch. TODO
pub fn main() -> i32 {
    0
}
