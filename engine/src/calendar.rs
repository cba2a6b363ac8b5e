//! Store calendars and pickup slots.
