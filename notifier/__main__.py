from notifier.serve import main

main("notifier.app:app")
