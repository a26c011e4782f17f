"""What the tests share: real servers and raw clients to drive them, waiting with a
deadline, a fake clock. Test modules import from here; nothing here is a test."""
