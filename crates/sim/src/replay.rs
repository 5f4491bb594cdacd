//! Incident replays (placeholder).
