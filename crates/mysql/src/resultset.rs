//! Text result sets: column definitions (`Protocol::ColumnDefinition41`) and text rows, decoded
//! and encoded. The relay never needs these (it forwards result sets untouched, see
//! `crate::tracker`); the proxy does for its own queries (`SELECT @@max_connections`,
//! `@@read_only` for budgets and failover) and to answer a client itself.
//!
//! Invariants: row decoding takes the column count from the result set but allocates only per
//! value actually present (each takes at least one byte of the payload), so a bogus count cannot
//! drive an allocation; trailing bytes are an error. MariaDB's extended type info (an extra field
//! in column definitions) is not negotiated by poolguard and not decoded here.

use bytes::{BufMut, BytesMut};

use crate::consts::LOCAL_INFILE_HEADER;
use crate::lenenc::{put_lenenc_bytes, put_lenenc_int, Reader};
use crate::DecodeError;

/// Length of the fixed-size block of a column definition, always 0x0C.
const FIXED_FIELDS_LEN: u64 = 0x0c;

/// `MYSQL_TYPE_LONGLONG`, a common column type for the proxy's own answers.
pub const MYSQL_TYPE_LONGLONG: u8 = 0x08;
/// `MYSQL_TYPE_VAR_STRING`.
pub const MYSQL_TYPE_VAR_STRING: u8 = 0xfd;

/// One column of a result set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnDefinition {
    /// Database of the table ("" for expressions).
    pub schema: String,
    /// Table alias.
    pub table: String,
    /// Physical table name.
    pub org_table: String,
    /// Column alias (what clients show).
    pub name: String,
    /// Physical column name.
    pub org_name: String,
    /// Collation id (63 = binary).
    pub charset: u16,
    /// Maximum display length.
    pub column_length: u32,
    /// `MYSQL_TYPE_*`.
    pub column_type: u8,
    /// Column flags (NOT_NULL, UNSIGNED...).
    pub flags: u16,
    /// Decimal digits.
    pub decimals: u8,
}

impl ColumnDefinition {
    /// Decodes a column definition. Fields after the fixed block (COM_FIELD_LIST's default value)
    /// are ignored. Names are decoded lossily: they are for display.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let catalog = r.lenenc_bytes("catalog")?;
        if catalog != b"def" {
            return Err(DecodeError::Malformed {
                what: "column definition",
                detail: "catalog is not \"def\"",
            });
        }
        let mut text = |what| {
            r.lenenc_bytes(what)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let schema = text("schema")?;
        let table = text("table")?;
        let org_table = text("org_table")?;
        let name = text("name")?;
        let org_name = text("org_name")?;
        let fixed = r.lenenc_int("fixed fields length")?;
        if fixed < FIXED_FIELDS_LEN {
            return Err(DecodeError::Malformed {
                what: "column definition",
                detail: "fixed fields block shorter than 12 bytes",
            });
        }
        Ok(ColumnDefinition {
            schema,
            table,
            org_table,
            name,
            org_name,
            charset: r.u16("character set")?,
            column_length: r.u32("column length")?,
            column_type: r.u8("column type")?,
            flags: r.u16("flags")?,
            decimals: r.u8("decimals")?,
        })
    }

    /// Writes the payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        put_lenenc_bytes(buf, b"def");
        for s in [
            &self.schema,
            &self.table,
            &self.org_table,
            &self.name,
            &self.org_name,
        ] {
            put_lenenc_bytes(buf, s.as_bytes());
        }
        put_lenenc_int(buf, FIXED_FIELDS_LEN);
        buf.put_u16_le(self.charset);
        buf.put_u32_le(self.column_length);
        buf.put_u8(self.column_type);
        buf.put_u16_le(self.flags);
        buf.put_u8(self.decimals);
        buf.put_u16_le(0);
    }
}

/// Decodes a text row of `columns` values; `None` is SQL NULL. Values borrow from the payload.
pub fn decode_text_row(payload: &[u8], columns: usize) -> Result<Vec<Option<&[u8]>>, DecodeError> {
    let mut r = Reader::new(payload);
    let mut values = Vec::new();
    for _ in 0..columns {
        if r.peek() == Some(LOCAL_INFILE_HEADER) {
            // 0xFB is NULL in rows.
            r.skip(1, "NULL")?;
            values.push(None);
        } else {
            values.push(Some(r.lenenc_bytes("row value")?));
        }
    }
    if !r.is_empty() {
        return Err(DecodeError::Malformed {
            what: "text row",
            detail: "more values than columns",
        });
    }
    Ok(values)
}

/// Writes a text row.
pub fn encode_text_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    for v in values {
        match v {
            Some(v) => put_lenenc_bytes(buf, v),
            None => buf.put_u8(LOCAL_INFILE_HEADER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::unhex;
    use proptest::prelude::*;

    #[test]
    fn decodes_real_mariadb_column_definitions() {
        // `SELECT id, s FROM t.x`, MariaDB 10.11 (testdata capture).
        let id = ColumnDefinition::decode(&unhex(
            "036465660174017801780269640269640c3f000b000000030350000000",
        ))
        .unwrap();
        assert_eq!(
            (id.schema.as_str(), id.table.as_str(), id.name.as_str()),
            ("t", "x", "id")
        );
        assert_eq!(id.column_type, 0x03);
        assert_eq!(id.charset, 63);
        assert_eq!(id.column_length, 11);
        let s = ColumnDefinition::decode(&unhex(
            "03646566017401780178017301730c2d0050000000fd0000000000",
        ))
        .unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(s.column_type, MYSQL_TYPE_VAR_STRING);
        assert_eq!(s.charset, 45);
        let mut b = BytesMut::new();
        s.encode(&mut b);
        assert_eq!(
            &b[..],
            &unhex("03646566017401780178017301730c2d0050000000fd0000000000")[..]
        );
        // COM_FIELD_LIST appends a default value, which is ignored.
        let with_default = unhex("036465660174017801780269640269640c3f000b0000000303500000000130");
        assert_eq!(ColumnDefinition::decode(&with_default).unwrap(), id);
        assert!(ColumnDefinition::decode(b"\x03abc").is_err());
    }

    #[test]
    fn text_rows() {
        assert_eq!(
            decode_text_row(&unhex("01310161"), 2).unwrap(),
            vec![Some(&b"1"[..]), Some(&b"a"[..])]
        );
        assert_eq!(
            decode_text_row(&[0xfb, 0x00], 2).unwrap(),
            vec![None, Some(&b""[..])]
        );
        assert!(decode_text_row(&unhex("01310161"), 1).is_err());
        assert!(decode_text_row(&unhex("0131"), 2).is_err());
        // A huge column count with a tiny payload fails without allocating for the count.
        assert!(decode_text_row(&[1, b'x'], usize::MAX).is_err());
        let mut b = BytesMut::new();
        encode_text_row(&mut b, &[Some(b"151"), None]);
        assert_eq!(&b[..], b"\x03151\xfb");
    }

    proptest! {
        #[test]
        fn round_trips(
            names in proptest::collection::vec("[a-z_@]{0,12}", 5),
            charset in any::<u16>(), len in any::<u32>(), ty in any::<u8>(), flags in any::<u16>(), dec in any::<u8>(),
            row in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)), 0..6),
        ) {
            let c = ColumnDefinition {
                schema: names[0].clone(), table: names[1].clone(), org_table: names[2].clone(),
                name: names[3].clone(), org_name: names[4].clone(),
                charset, column_length: len, column_type: ty, flags, decimals: dec,
            };
            let mut b = BytesMut::new();
            c.encode(&mut b);
            prop_assert_eq!(ColumnDefinition::decode(&b).unwrap(), c);
            let values: Vec<Option<&[u8]>> = row.iter().map(|v| v.as_deref()).collect();
            let mut b = BytesMut::new();
            encode_text_row(&mut b, &values);
            prop_assert_eq!(decode_text_row(&b, values.len()).unwrap(), values);
        }

        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..60), n in 0usize..8) {
            let _ = ColumnDefinition::decode(&buf);
            let _ = decode_text_row(&buf, n);
        }
    }
}
