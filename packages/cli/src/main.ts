#!/usr/bin/env node
console.log("plinth");
