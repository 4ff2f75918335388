from notifier.transport.serve import main

main("api.app:app")
