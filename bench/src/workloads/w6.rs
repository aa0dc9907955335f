//! W6: oversubscribed: 8 processes on the machine's 2 cores, W3's mix. Also reports, per
//! system, W6's total against its own W3 total when both ran.

use super::Ctx;

pub fn run(ctx: &mut Ctx) {
    let procs = ctx.sizes.w6_procs;
    super::w3::mix(ctx, "W6", procs);
    super::w3::python_mix(ctx, "W6", procs);
    super::w3::mix_limits(ctx, "W6", procs);
}
