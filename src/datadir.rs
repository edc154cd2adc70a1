//! The node data directory: lock, identity and layout. (Built in issue 2.)
