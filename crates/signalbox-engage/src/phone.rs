//! Phone numbers to E.164 (`+15005550006`).
//!
//! A number written internationally (`+44 20 7946 0958`, `0044 …`) needs no country. A
//! national number (`(415) 555-2671`, `020 7946 0958`) is normalised when the profile's country
//! is known and listed in `COUNTRIES`: its trunk prefix is dropped and its calling code put in
//! front. Anything else is refused with a reason; the caller keeps the text as a property and
//! reports it.

/// (ISO 3166 alpha-2, calling code, trunk prefix, national significant number lengths).
const COUNTRIES: &[(&str, &str, &str, (usize, usize))] = &[
    ("US", "1", "1", (10, 10)),
    ("CA", "1", "1", (10, 10)),
    ("PR", "1", "1", (10, 10)),
    ("GB", "44", "0", (9, 10)),
    ("IE", "353", "0", (7, 9)),
    ("DE", "49", "0", (6, 13)),
    ("FR", "33", "0", (9, 9)),
    ("ES", "34", "", (9, 9)),
    ("IT", "39", "", (6, 11)),
    ("PT", "351", "", (9, 9)),
    ("NL", "31", "0", (9, 9)),
    ("BE", "32", "0", (8, 9)),
    ("LU", "352", "", (4, 11)),
    ("CH", "41", "0", (9, 9)),
    ("AT", "43", "0", (4, 13)),
    ("DK", "45", "", (8, 8)),
    ("NO", "47", "", (8, 8)),
    ("SE", "46", "0", (7, 9)),
    ("FI", "358", "0", (5, 10)),
    ("PL", "48", "", (9, 9)),
    ("CZ", "420", "", (9, 9)),
    ("GR", "30", "", (10, 10)),
    ("AU", "61", "0", (9, 9)),
    ("NZ", "64", "0", (8, 10)),
    ("IN", "91", "0", (10, 10)),
    ("JP", "81", "0", (9, 10)),
    ("SG", "65", "", (8, 8)),
    ("HK", "852", "", (8, 8)),
    ("CN", "86", "0", (10, 11)),
    ("BR", "55", "0", (10, 11)),
    ("MX", "52", "", (10, 10)),
    ("ZA", "27", "0", (9, 9)),
    ("IL", "972", "0", (8, 9)),
    ("AE", "971", "0", (8, 9)),
];

/// Country names and other codes people write, to ISO alpha-2.
const COUNTRY_NAMES: &[(&str, &str)] = &[
    ("united states", "US"),
    ("united states of america", "US"),
    ("usa", "US"),
    ("u.s.", "US"),
    ("u.s.a.", "US"),
    ("america", "US"),
    ("canada", "CA"),
    ("puerto rico", "PR"),
    ("united kingdom", "GB"),
    ("uk", "GB"),
    ("great britain", "GB"),
    ("england", "GB"),
    ("scotland", "GB"),
    ("wales", "GB"),
    ("ireland", "IE"),
    ("germany", "DE"),
    ("deutschland", "DE"),
    ("france", "FR"),
    ("spain", "ES"),
    ("españa", "ES"),
    ("italy", "IT"),
    ("italia", "IT"),
    ("portugal", "PT"),
    ("netherlands", "NL"),
    ("the netherlands", "NL"),
    ("holland", "NL"),
    ("belgium", "BE"),
    ("luxembourg", "LU"),
    ("switzerland", "CH"),
    ("austria", "AT"),
    ("denmark", "DK"),
    ("norway", "NO"),
    ("sweden", "SE"),
    ("finland", "FI"),
    ("poland", "PL"),
    ("czech republic", "CZ"),
    ("czechia", "CZ"),
    ("greece", "GR"),
    ("australia", "AU"),
    ("new zealand", "NZ"),
    ("india", "IN"),
    ("japan", "JP"),
    ("singapore", "SG"),
    ("hong kong", "HK"),
    ("china", "CN"),
    ("brazil", "BR"),
    ("brasil", "BR"),
    ("mexico", "MX"),
    ("méxico", "MX"),
    ("south africa", "ZA"),
    ("israel", "IL"),
    ("united arab emirates", "AE"),
    ("uae", "AE"),
];

/// The ISO alpha-2 code for a country as written (`US`, `usa`, `United Kingdom`, `DEU` is not
/// known).
pub fn country_code(country: &str) -> Option<&'static str> {
    let trimmed = country.trim();
    if trimmed.len() == 2 {
        let upper = trimmed.to_ascii_uppercase();
        let upper = if upper == "UK" {
            "GB".to_owned()
        } else {
            upper
        };
        return COUNTRIES
            .iter()
            .find(|(iso, ..)| *iso == upper)
            .map(|(iso, ..)| *iso);
    }
    let lower = trimmed.to_lowercase();
    COUNTRY_NAMES
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, iso)| *iso)
}

/// The country of a BCP-47 locale (`en-US`, `de_DE`).
pub fn locale_country(locale: &str) -> Option<&'static str> {
    let region = locale.split(['-', '_']).nth(1)?;
    if region.len() == 2 {
        country_code(region)
    } else {
        None
    }
}

/// E.164 for `raw`, given the profile's country (ISO alpha-2) when known.
pub fn normalize(raw: &str, country: Option<&str>) -> Result<String, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("empty".into());
    }
    let mut digits = String::with_capacity(trimmed.len());
    let mut plus = false;
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return Err(format!("unexpected character {c:?}")),
        }
    }
    if !plus {
        if let Some(rest) = digits.strip_prefix("00") {
            digits = rest.to_owned();
            plus = true;
        }
    }
    if plus {
        return international(&digits);
    }
    let Some(iso) = country else {
        return Err("national number and no known country".into());
    };
    let Some(&(_, code, trunk, (min, max))) = COUNTRIES.iter().find(|(c, ..)| *c == iso) else {
        return Err(format!("national number and no numbering plan for {iso}"));
    };
    let mut national = digits.as_str();
    // A national number may be written with its calling code but without '+'.
    if national.len() > max && national.starts_with(code) && code != trunk {
        national = &national[code.len()..];
    }
    if !trunk.is_empty() && national.len() > min && national.starts_with(trunk) {
        let without = &national[trunk.len()..];
        if without.len() >= min {
            national = without;
        }
    }
    if national.len() < min || national.len() > max {
        return Err(format!(
            "{} digits is not a valid length for {iso} ({min} to {max})",
            national.len()
        ));
    }
    international(&format!("{code}{national}"))
}

fn international(digits: &str) -> Result<String, String> {
    if digits.starts_with('0') {
        return Err("a country code never starts with 0".into());
    }
    if !(8..=15).contains(&digits.len()) {
        return Err(format!(
            "{} digits is not a valid international number (8 to 15)",
            digits.len()
        ));
    }
    Ok(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, country: Option<&str>, expect: Option<&str>) {
        let got = normalize(raw, country);
        assert_eq!(
            got.as_deref().ok(),
            expect,
            "{raw:?} in {country:?}: {got:?}"
        );
    }

    #[test]
    fn international_forms_need_no_country() {
        check("+1 (415) 555-2671", None, Some("+14155552671"));
        check("+44 20 7946 0958", None, Some("+442079460958"));
        check("0044 20 7946 0958", None, Some("+442079460958"));
        check("+15005550006", Some("GB"), Some("+15005550006"));
        check("+0 123 456 789", None, None);
        check("+1 555", None, None);
    }

    #[test]
    fn national_forms_use_the_country() {
        check("(415) 555-2671", Some("US"), Some("+14155552671"));
        check("1-415-555-2671", Some("US"), Some("+14155552671"));
        check("415.555.2671", Some("CA"), Some("+14155552671"));
        check("020 7946 0958", Some("GB"), Some("+442079460958"));
        check("07700 900123", Some("GB"), Some("+447700900123"));
        check("030 1234567", Some("DE"), Some("+49301234567"));
        check("06 12 34 56 78", Some("FR"), Some("+33612345678"));
        check("06 1234 5678", Some("IT"), Some("+390612345678"));
        check("0412 345 678", Some("AU"), Some("+61412345678"));
        check("4155552671", Some("US"), Some("+14155552671"));
        check("14155552671", Some("US"), Some("+14155552671"));
        check("33612345678", Some("FR"), Some("+33612345678"));
    }

    #[test]
    fn what_cannot_be_normalised_says_why() {
        assert!(normalize("(415) 555-2671", None)
            .unwrap_err()
            .contains("no known country"));
        assert!(normalize("555-2671", Some("US"))
            .unwrap_err()
            .contains("length"));
        assert!(normalize("call me", Some("US")).is_err());
        assert!(normalize("", Some("US")).is_err());
        assert!(normalize("12345678", Some("KZ")).is_err());
    }

    #[test]
    fn countries_as_people_write_them() {
        assert_eq!(country_code("us"), Some("US"));
        assert_eq!(country_code(" United States "), Some("US"));
        assert_eq!(country_code("UK"), Some("GB"));
        assert_eq!(country_code("Deutschland"), Some("DE"));
        assert_eq!(country_code("Atlantis"), None);
        assert_eq!(locale_country("en-GB"), Some("GB"));
        assert_eq!(locale_country("de_DE"), Some("DE"));
        assert_eq!(locale_country("fr"), None);
    }
}
