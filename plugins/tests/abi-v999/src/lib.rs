//! Claims an ABI version the host does not speak.

#[no_mangle]
pub extern "C" fn pika_migrate_plugin_abi_version() -> u32 {
    999
}
