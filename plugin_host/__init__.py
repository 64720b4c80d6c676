"""The thin host side of Barforge: the C shared-memory library and its Python wrappers
(`plugin_host.shm`), the LV2 plugin (plugin_host/lv2/) and the reference host
(`barforge host`, plugin_host/host/). Never imports engine/."""
