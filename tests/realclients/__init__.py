"""Real desktop and terminal clients driven by the tests (R3.8): Gajim under Xvfb with a private
D-Bus session bus and a notification-daemon double, poezio in tmux."""
