//! The segmented write-ahead log. (Built in issue 2.)
