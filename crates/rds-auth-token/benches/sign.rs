//! Signing one token, with and without a session token, and a cache hit.

use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use rds_auth_token::{Credentials, TokenCache, TokenRequest, generate};

fn sign(c: &mut Criterion) {
    let now = UNIX_EPOCH + Duration::from_secs(1_796_412_600);
    let request = TokenRequest {
        host: "orders.cluster-c1x2y3z4.eu-west-1.rds.amazonaws.com",
        port: 5432,
        user: "app_reader",
        region: "eu-west-1",
    };
    let plain =
        Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "bench");
    let session = Credentials::new(
        "ASIAEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        Some("IQoJb3JpZ2luX2VjEXAMPLE/".repeat(30)),
        None,
        "bench",
    );
    c.bench_function("sign/static-credentials", |b| b.iter(|| generate(&plain, &request, now)));
    c.bench_function("sign/session-credentials", |b| b.iter(|| generate(&session, &request, now)));
    let cache = TokenCache::new(Duration::from_secs(600), Duration::from_secs(60));
    let _ = cache.get_or_generate(&plain, &request, now);
    c.bench_function("sign/cache-hit", |b| {
        b.iter(|| cache.get_or_generate(&plain, &request, now + Duration::from_secs(1)))
    });
}

criterion_group!(benches, sign);
criterion_main!(benches);
