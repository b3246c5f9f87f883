from motionctl.cli import main

main()
