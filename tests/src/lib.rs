//! System tests of shop.
