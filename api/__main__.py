from notifier.serve import main

main("api.app:app")
