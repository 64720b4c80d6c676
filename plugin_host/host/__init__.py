"""The reference host (`barforge host`): transport clock, OSC client, clip timeline, playback
through sounddevice or an offline render, output written into the capture ring."""
