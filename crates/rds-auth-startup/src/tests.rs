use bytes::Bytes;
use expect_test::expect;
use proptest::collection::vec;
use proptest::prelude::*;
use rds_auth_codec::Params;

use super::*;

fn params(pairs: &[(&str, &str)]) -> Params {
    let mut p = Params::new();
    for (n, v) in pairs {
        p.push(n.as_bytes().to_vec(), v.as_bytes().to_vec()).unwrap();
    }
    p
}

fn injection() -> Injection {
    Injection {
        target: Endpoint::parse(b"db.example.com:5432").unwrap(),
        credential: Some(Secret::new(&b"token-value"[..])),
        identity: None,
    }
}

#[test]
fn inject_appends_after_the_client_params() {
    let client = params(&[
        ("user", "alice"),
        ("database", "orders"),
        ("options", "-c statement_timeout=5s"),
        ("extra_float_digits", "2"),
        ("DateStyle", "ISO"),
        ("application_name", "psql"),
    ]);
    let out = inject(&client, &injection()).unwrap();
    let names: Vec<String> = out.names().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
    expect![[r#"
        [
            "user",
            "database",
            "options",
            "extra_float_digits",
            "DateStyle",
            "application_name",
            "host",
            "password",
        ]
    "#]]
    .assert_debug_eq(&names);
    let (back, extracted) = extract(out).unwrap();
    assert_eq!(back, client);
    assert_eq!(extracted, injection());
}

#[test]
fn refusals_carry_sqlstate_and_hint() {
    let check = |p: Params, expect: expect_test::Expect| {
        let err = inject(&p, &injection()).unwrap_err();
        expect.assert_eq(&format!("{} {}: {}", err.sqlstate(), err, err.hint()));
    };
    check(
        params(&[("database", "x")]),
        expect![
            "28000 no PostgreSQL user name specified in startup packet: pass a user name, for example psql -U <user>"
        ],
    );
    check(
        params(&[("user", "a"), ("password", "mine")]),
        expect![[
            r#"08P01 startup parameter "password" is reserved by rds-auth-proxy: the proxies carry the target and the credential in the "host" and "password" startup parameters; remove them from the client's connection options"#
        ]],
    );
    check(
        params(&[("user", "a"), ("TimeZone", "UTC"), ("TimeZone", "UTC")]),
        expect![[
            r#"08P01 startup parameter "TimeZone" was sent more than once: send each startup parameter once"#
        ]],
    );
    check(
        params(&[("user", "a"), ("replication", "database")]),
        expect![
            "0A000 replication connections are not supported through rds-auth-proxy: IAM database authentication cannot be used for replication connections; connect without replication=true"
        ],
    );
    assert!(inject(&params(&[("user", "a"), ("replication", "false")]), &injection()).is_ok());
}

#[test]
fn extract_refuses_a_second_target_or_credential() {
    let mut p = inject(&params(&[("user", "a")]), &injection()).unwrap();
    p.push(&b"host"[..], &b"169.254.169.254:80"[..]).unwrap();
    assert_eq!(extract(p).unwrap_err(), StartupError::DuplicateParameter("host".into()));
    assert_eq!(extract(params(&[("user", "a")])).unwrap_err(), StartupError::MissingTarget);
}

#[test]
fn passthrough_has_no_credential() {
    let inj = Injection { credential: None, ..injection() };
    let (_, extracted) = extract(inject(&params(&[("user", "a")]), &inj).unwrap()).unwrap();
    assert_eq!(extracted.credential, None);
}

fn name() -> impl Strategy<Value = Bytes> {
    vec(1u8..=255, 1..16)
        .prop_filter("not ours", |n| !RESERVED_PARAMS.contains(&n.as_slice()) && n != b"replication")
        .prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = Bytes> {
    vec(1u8..=255, 0..32).prop_map(Bytes::from)
}

fn client_params() -> impl Strategy<Value = Params> {
    (vec((name(), value()), 0..10), "[a-z_]{1,12}").prop_map(|(pairs, user)| {
        let mut p = Params::new();
        p.push(&b"user"[..], user.into_bytes()).unwrap();
        let mut seen = vec![Bytes::from_static(b"user")];
        for (n, v) in pairs {
            if !seen.contains(&n) {
                seen.push(n.clone());
                p.push(n, v).unwrap();
            }
        }
        p
    })
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    ("[a-z][a-z0-9-]{0,20}[a-z0-9](\\.[a-z][a-z0-9]{0,10}){0,4}", 1u16..)
        .prop_map(|(host, port)| Endpoint::new(&host, port).unwrap())
}

proptest! {
    #[test]
    fn extract_inverts_inject(
        p in client_params(),
        target in endpoint(),
        credential in proptest::option::of(vec(1u8..=255, 1..2000)),
        identity in proptest::option::of(vec(1u8..=255, 1..2000)),
    ) {
        let injection =
            Injection { target, credential: credential.map(Secret::new), identity: identity.map(Secret::new) };
        let (back, extracted) = extract(inject(&p, &injection).unwrap()).unwrap();
        prop_assert_eq!(back, p);
        prop_assert_eq!(extracted, injection);
    }

    #[test]
    fn endpoint_display_parses_back(target in endpoint()) {
        prop_assert_eq!(Endpoint::parse(target.to_string().as_bytes()).unwrap(), target);
    }

    #[test]
    fn arbitrary_targets_never_panic(text in vec(any::<u8>(), 0..300)) {
        if let Ok(endpoint) = Endpoint::parse(&text) {
            // Whatever is accepted has exactly one spelling.
            let (shown, lowered) = (endpoint.to_string(), text.to_ascii_lowercase());
            prop_assert_eq!(shown.as_bytes(), lowered.as_slice());
        }
    }
}
