//! Collation ids as a handshake names them (one byte), with their character set and collation
//! names: what `SET NAMES <charset> COLLATE <collation>` needs to put a server connection in
//! exactly the state a handshake with that id gives (character set variables take names, and
//! a name alone means the character set's default collation, which result-set column
//! definitions would then report instead of the client's).
//!
//! Read from MariaDB 10.11's `information_schema.COLLATIONS`, ids below 256, without the
//! character sets a client cannot use (ucs2, utf16, utf16le, utf32) and without utf8mb3,
//! whose names older MySQL servers spell `utf8`, and without 245, which MySQL names otherwise
//! (`utf8mb4_croatian_ci`; MariaDB `utf8mb4_croatian_mysql561_ci`). An id not listed here is
//! left to the caller's fallback.

/// `(id, character set, collation)`, sorted by id.
const COLLATIONS: &[(u16, &str, &str)] = &[
    (1, "big5", "big5_chinese_ci"),
    (2, "latin2", "latin2_czech_cs"),
    (3, "dec8", "dec8_swedish_ci"),
    (4, "cp850", "cp850_general_ci"),
    (5, "latin1", "latin1_german1_ci"),
    (6, "hp8", "hp8_english_ci"),
    (7, "koi8r", "koi8r_general_ci"),
    (8, "latin1", "latin1_swedish_ci"),
    (9, "latin2", "latin2_general_ci"),
    (10, "swe7", "swe7_swedish_ci"),
    (11, "ascii", "ascii_general_ci"),
    (12, "ujis", "ujis_japanese_ci"),
    (13, "sjis", "sjis_japanese_ci"),
    (14, "cp1251", "cp1251_bulgarian_ci"),
    (15, "latin1", "latin1_danish_ci"),
    (16, "hebrew", "hebrew_general_ci"),
    (18, "tis620", "tis620_thai_ci"),
    (19, "euckr", "euckr_korean_ci"),
    (20, "latin7", "latin7_estonian_cs"),
    (21, "latin2", "latin2_hungarian_ci"),
    (22, "koi8u", "koi8u_general_ci"),
    (23, "cp1251", "cp1251_ukrainian_ci"),
    (24, "gb2312", "gb2312_chinese_ci"),
    (25, "greek", "greek_general_ci"),
    (26, "cp1250", "cp1250_general_ci"),
    (27, "latin2", "latin2_croatian_ci"),
    (28, "gbk", "gbk_chinese_ci"),
    (29, "cp1257", "cp1257_lithuanian_ci"),
    (30, "latin5", "latin5_turkish_ci"),
    (31, "latin1", "latin1_german2_ci"),
    (32, "armscii8", "armscii8_general_ci"),
    (34, "cp1250", "cp1250_czech_cs"),
    (36, "cp866", "cp866_general_ci"),
    (37, "keybcs2", "keybcs2_general_ci"),
    (38, "macce", "macce_general_ci"),
    (39, "macroman", "macroman_general_ci"),
    (40, "cp852", "cp852_general_ci"),
    (41, "latin7", "latin7_general_ci"),
    (42, "latin7", "latin7_general_cs"),
    (43, "macce", "macce_bin"),
    (44, "cp1250", "cp1250_croatian_ci"),
    (45, "utf8mb4", "utf8mb4_general_ci"),
    (46, "utf8mb4", "utf8mb4_bin"),
    (47, "latin1", "latin1_bin"),
    (48, "latin1", "latin1_general_ci"),
    (49, "latin1", "latin1_general_cs"),
    (50, "cp1251", "cp1251_bin"),
    (51, "cp1251", "cp1251_general_ci"),
    (52, "cp1251", "cp1251_general_cs"),
    (53, "macroman", "macroman_bin"),
    (57, "cp1256", "cp1256_general_ci"),
    (58, "cp1257", "cp1257_bin"),
    (59, "cp1257", "cp1257_general_ci"),
    (63, "binary", "binary"),
    (64, "armscii8", "armscii8_bin"),
    (65, "ascii", "ascii_bin"),
    (66, "cp1250", "cp1250_bin"),
    (67, "cp1256", "cp1256_bin"),
    (68, "cp866", "cp866_bin"),
    (69, "dec8", "dec8_bin"),
    (70, "greek", "greek_bin"),
    (71, "hebrew", "hebrew_bin"),
    (72, "hp8", "hp8_bin"),
    (73, "keybcs2", "keybcs2_bin"),
    (74, "koi8r", "koi8r_bin"),
    (75, "koi8u", "koi8u_bin"),
    (77, "latin2", "latin2_bin"),
    (78, "latin5", "latin5_bin"),
    (79, "latin7", "latin7_bin"),
    (80, "cp850", "cp850_bin"),
    (81, "cp852", "cp852_bin"),
    (82, "swe7", "swe7_bin"),
    (84, "big5", "big5_bin"),
    (85, "euckr", "euckr_bin"),
    (86, "gb2312", "gb2312_bin"),
    (87, "gbk", "gbk_bin"),
    (88, "sjis", "sjis_bin"),
    (89, "tis620", "tis620_bin"),
    (91, "ujis", "ujis_bin"),
    (92, "geostd8", "geostd8_general_ci"),
    (93, "geostd8", "geostd8_bin"),
    (94, "latin1", "latin1_spanish_ci"),
    (95, "cp932", "cp932_japanese_ci"),
    (96, "cp932", "cp932_bin"),
    (97, "eucjpms", "eucjpms_japanese_ci"),
    (98, "eucjpms", "eucjpms_bin"),
    (99, "cp1250", "cp1250_polish_ci"),
    (224, "utf8mb4", "utf8mb4_unicode_ci"),
    (225, "utf8mb4", "utf8mb4_icelandic_ci"),
    (226, "utf8mb4", "utf8mb4_latvian_ci"),
    (227, "utf8mb4", "utf8mb4_romanian_ci"),
    (228, "utf8mb4", "utf8mb4_slovenian_ci"),
    (229, "utf8mb4", "utf8mb4_polish_ci"),
    (230, "utf8mb4", "utf8mb4_estonian_ci"),
    (231, "utf8mb4", "utf8mb4_spanish_ci"),
    (232, "utf8mb4", "utf8mb4_swedish_ci"),
    (233, "utf8mb4", "utf8mb4_turkish_ci"),
    (234, "utf8mb4", "utf8mb4_czech_ci"),
    (235, "utf8mb4", "utf8mb4_danish_ci"),
    (236, "utf8mb4", "utf8mb4_lithuanian_ci"),
    (237, "utf8mb4", "utf8mb4_slovak_ci"),
    (238, "utf8mb4", "utf8mb4_spanish2_ci"),
    (239, "utf8mb4", "utf8mb4_roman_ci"),
    (240, "utf8mb4", "utf8mb4_persian_ci"),
    (241, "utf8mb4", "utf8mb4_esperanto_ci"),
    (242, "utf8mb4", "utf8mb4_hungarian_ci"),
    (243, "utf8mb4", "utf8mb4_sinhala_ci"),
    (244, "utf8mb4", "utf8mb4_german2_ci"),
    (246, "utf8mb4", "utf8mb4_unicode_520_ci"),
    (247, "utf8mb4", "utf8mb4_vietnamese_ci"),
];

/// The character set and collation names of collation `id`, if it is listed.
pub fn names(id: u16) -> Option<(&'static str, &'static str)> {
    let i = COLLATIONS
        .binary_search_by_key(&id, |&(id, _, _)| id)
        .ok()?;
    COLLATIONS
        .get(i)
        .map(|&(_, charset, collation)| (charset, collation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sorted_and_found() {
        assert!(COLLATIONS
            .windows(2)
            .all(|w| matches!(w, [a, b] if a.0 < b.0)));
        assert_eq!(names(224), Some(("utf8mb4", "utf8mb4_unicode_ci")));
        assert_eq!(names(45), Some(("utf8mb4", "utf8mb4_general_ci")));
        assert_eq!(names(63), Some(("binary", "binary")));
        assert_eq!(names(33), None, "utf8mb3: left to the fallback");
        assert_eq!(names(255), None);
    }
}
