from codesign.launch import console

console()
