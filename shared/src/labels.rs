//! Reviewed frames as a labelled folder: one image file per frame and a `labels.csv` with a `file` and a
//! `label` column, the format `tierline-models eval` and `calibrate` read. The review console's export and
//! `tierline-review export` both write it, so a recalibration can run on a plant's own reviewed frames.

/// The CSV header. `file` and `label` are what the model tools read; the other columns say where each frame
/// came from.
pub const HEADER: &str = "file,label,edge_id,seq,camera_id,cloud_label,reviewer";

/// One reviewed frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled<'a> {
    /// Edge id.
    pub edge_id: &'a str,
    /// The outbox incarnation that numbered the frame.
    pub incarnation: &'a str,
    /// Sequence number.
    pub seq: u64,
    /// Camera id.
    pub camera_id: &'a str,
    /// The latest human label.
    pub label: &'a str,
    /// The cloud model's label.
    pub cloud_label: &'a str,
    /// Who gave the label.
    pub reviewer: &'a str,
    /// True for PNG images, else JPEG.
    pub png: bool,
}

impl Labelled<'_> {
    /// The image's file name in the folder: unique per frame, only `[A-Za-z0-9._-]`.
    pub fn file_name(&self) -> String {
        let incarnation: String = self
            .incarnation
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let ext = if self.png { "png" } else { "jpg" };
        let name = if incarnation.is_empty() {
            format!("{}-{}.{ext}", self.edge_id, self.seq)
        } else {
            format!("{}-{incarnation}-{}.{ext}", self.edge_id, self.seq)
        };
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// Its `labels.csv` line (no newline). Commas and line breaks in a field become spaces: the readers
    /// split on commas without quoting.
    pub fn csv_line(&self) -> String {
        [
            self.file_name().as_str(),
            self.label,
            self.edge_id,
            &self.seq.to_string(),
            self.camera_id,
            self.cloud_label,
            self.reviewer,
        ]
        .iter()
        .map(|f| field(f))
        .collect::<Vec<_>>()
        .join(",")
    }
}

fn field(s: &str) -> String {
    s.chars()
        .map(|c| if c == ',' || c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_fields_never_split_a_line() {
        let l = Labelled {
            edge_id: "edge-1",
            incarnation: "3f2a9c#ab12",
            seq: 42,
            camera_id: "cam,0",
            label: "scratch",
            cloud_label: "good",
            reviewer: "ana\nbel",
            png: false,
        };
        assert_eq!(l.file_name(), "edge-1-3f2a9cab12-42.jpg");
        assert_eq!(
            l.csv_line(),
            "edge-1-3f2a9cab12-42.jpg,scratch,edge-1,42,cam 0,good,ana bel"
        );
        assert_eq!(l.csv_line().split(',').count(), HEADER.split(',').count());
    }
}
