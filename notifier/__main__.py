from notifier.transport.serve import main

main("notifier.app:app")
